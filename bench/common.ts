/**
 * What the bench and its baselines share: the product every server answers, the id samplers
 * (uniform and Zipf-like), free loopback ports, and CPU time per process from /proc (Linux).
 */
import fs from "node:fs";
import net from "node:net";
import { testPorts } from "../test/support/ports";

export const CATEGORIES = ["tea", "coffee", "spices", "sweets", "textiles", "ceramics", "copper", "soap"];
const EPOCH = "2026-01-01T00:00:00.000Z";

/** The product of id `i`, in the shape products.get answers (services/products/model.ts Product). */
export function product(i: number) {
	return {
		id: i,
		sku: `BENCH-${String(i).padStart(6, "0")}`,
		name: `Bench product ${i}`,
		description: `A product seeded by the bench, number ${i}, with a description of a realistic length for a catalog page.`,
		category: CATEGORIES[i % CATEGORIES.length],
		priceCents: 1000 + ((i * 37) % 50_000),
		currency: "TRY",
		stock: 1_000_000,
		createdAt: EPOCH,
		updatedAt: EPOCH,
	};
}

export type Distribution = "uniform" | "zipf";

/** Draws ids 1..n: uniformly, or Zipf-like (s = 1: id k with weight 1/k, so id 1 is the hottest). */
export function sampler(dist: Distribution, n: number): () => number {
	if (dist === "uniform") return () => 1 + Math.floor(Math.random() * n);
	const cdf = new Float64Array(n);
	let sum = 0;
	for (let k = 1; k <= n; k++) cdf[k - 1] = sum += 1 / k;
	return () => {
		const u = Math.random() * sum;
		let lo = 0;
		let hi = n - 1;
		while (lo < hi) {
			const mid = (lo + hi) >> 1;
			if (cdf[mid] < u) lo = mid + 1;
			else hi = mid;
		}
		return lo + 1;
	};
}

/**
 * A port a target can listen on: drawn below the ephemeral range (test/support/ports testPorts),
 * where no outgoing connection takes it between this check and the target's listen, and found
 * free on every interface now.
 */
export async function freePort(): Promise<number> {
	for (;;) {
		const port = testPorts();
		const free = await new Promise<boolean>(resolve => {
			const srv = net.createServer();
			srv.once("error", () => resolve(false));
			srv.listen(port, "0.0.0.0", () => srv.close(() => resolve(true)));
		});
		if (free) return port;
	}
}

/** `pid` and every live process below it. */
export function processTree(pid: number): number[] {
	const parent = new Map<number, number>();
	for (const entry of fs.readdirSync("/proc")) {
		if (!/^\d+$/.test(entry)) continue;
		try {
			const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
			parent.set(Number(entry), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
		} catch {
			/* gone meanwhile */
		}
	}
	const out = [pid];
	for (let i = 0; i < out.length; i++) for (const [child, ppid] of parent) if (ppid === out[i]) out.push(child);
	return out.filter(p => parent.has(p));
}

/** CPU seconds (user + system) that `pid` has used so far (with `thread`: that thread's alone), 0 when it is gone. */
export function cpuSeconds(pid: number, thread?: number, opts: { reapedChildren?: boolean } = {}): number {
	try {
		const stat = fs.readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, "utf8");
		const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
		// utime, stime in USER_HZ (100 on Linux); with reapedChildren also cutime, cstime: the CPU of
		// children that have exited (a PostgreSQL backend, once its connection closed).
		return (Number(f[11]) + Number(f[12]) + (opts.reapedChildren ? Number(f[13]) + Number(f[14]) : 0)) / 100;
	} catch {
		return 0;
	}
}

export function isAlive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}
