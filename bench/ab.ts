/**
 * A/B of the embedded default's cached read: the same load against several builds (or the same
 * build with other environment), started side by side and measured in turns, so that the
 * machine's drift between runs falls on every variant alike. Reports the CPU per request of each
 * variant's process, and of its main thread alone (the rest is V8's and libuv's helper threads:
 * garbage collection, optimising compilers, the SQLite pool).
 *
 *   npx ts-node --transpile-only bench/ab.ts [--rounds 4] [--duration 4] [--warmup 2] [--idle 0] [--instances 1] <variant>...
 *
 * `--instances N` starts each variant N times (A B A B … in turn) and reports, besides each
 * process, the mean of its processes' medians. One process per variant can mislead: two processes
 * of the same build, measured in the same rounds, stay 5-15% apart for as long as they run
 * (each process's own JIT and heap history), which is more than most changes are worth.
 *
 * A variant is a directory holding a built copy (`dist/`, `package.json`, `node_modules/`, as
 * `npm run build` leaves them), optionally followed by `|` and JSON of more environment:
 *
 *   cp -r dist package.json /tmp/before/ && ln -s "$PWD/node_modules" /tmp/before/  # then change, build
 *   npx ts-node --transpile-only bench/ab.ts /tmp/before . '.|{"TRACING":"off"}'
 *
 * NODE_ARGS (environment) is passed to each variant's node, e.g. `--trace-opt`; with OUT=<prefix>
 * each variant's output goes to <prefix>-<n>. 2,000 products, uniform ids, 50 connections.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import autocannon from "autocannon";
import { benchEnv, seedProducts, sweep, waitHttp } from "./targets";
import { cpuSeconds, freePort } from "./common";
import { getLoad } from "./scenarios";
import { deleteKeysWithPrefix } from "../test/support/redis";

const PRODUCTS = 2000;
const args = process.argv.slice(2);
function option(name: string, dflt: number): number {
	const i = args.indexOf(`--${name}`);
	return i >= 0 ? Number(args.splice(i, 2)[1]) : dflt;
}
const ROUNDS = option("rounds", 4);
const DURATION = option("duration", 4);
const WARMUP = option("warmup", 2);
/** Seconds every variant sits idle between its start (seeded, read once) and the warm-up. */
const IDLE = option("idle", 0);
const INSTANCES = option("instances", 1);
if (args.length === 0) throw new Error("name at least one variant: a directory with a built copy, optionally |{json env}");

interface Variant {
	name: string;
	port: number;
	proc: ChildProcess;
	dataDir: string;
	/** Its Redis keys (with CACHER set) are `carsi-<namespace>-…`. */
	namespace: string;
	cpu: number[];
}

async function start(spec: string, index: number): Promise<Variant> {
	const [dir, extra] = spec.split("|");
	const root = path.resolve(dir);
	const port = await freePort();
	const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "carsi-ab-"));
	const namespace = `ab${randomBytes(3).toString("hex")}`;
	const env: Record<string, string> = {
		PATH: process.env.PATH ?? "",
		HOME: process.env.HOME ?? "",
		SERVICEDIR: "dist/services",
		...benchEnv({ dataDir, port, namespace }),
		...(extra ? (JSON.parse(extra) as Record<string, string>) : {}),
	};
	const out = process.env.OUT ? fs.openSync(`${process.env.OUT}-${index}`, "w") : "ignore";
	const nodeArgs = process.env.NODE_ARGS ? process.env.NODE_ARGS.split(" ") : [];
	const runner = path.join(root, "node_modules/moleculer/bin/moleculer-runner.js");
	const proc = spawn(process.execPath, [...nodeArgs, runner, "--config", "dist/moleculer.config.js"], { cwd: root, env, stdio: ["ignore", out, "inherit"] });
	await waitHttp(`http://127.0.0.1:${port}/ready`, 60_000, () => (proc.exitCode !== null ? `${spec} exited` : undefined));
	await seedProducts({ kind: "sqlite", file: path.join(dataDir, "products.sqlite") }, 1, PRODUCTS);
	await sweep({ name: spec, port }, PRODUCTS, 50);
	return { name: spec, port, proc, dataDir, namespace, cpu: [] };
}

(async () => {
	const variants: Variant[] = [];
	try {
		for (let i = 0; i < INSTANCES; i++) for (const spec of args) variants.push(await start(spec, variants.length));
		await new Promise(resolve => setTimeout(resolve, IDLE * 1000));
		const load = getLoad(PRODUCTS, "uniform");
		const run = (port: number, seconds: number) =>
			autocannon({
				url: `http://127.0.0.1:${port}`,
				connections: 50,
				duration: seconds,
				requests: [{ method: "GET", setupRequest: req => ({ ...req, path: load.next().path }) }],
			});
		for (const v of variants) await run(v.port, WARMUP);
		for (let round = 1; round <= ROUNDS; round++)
			for (const v of variants) {
				const pid = v.proc.pid!;
				const [all0, main0] = [cpuSeconds(pid), cpuSeconds(pid, pid)]; // a main thread's id is its pid
				const r = await run(v.port, DURATION);
				const [all1, main1] = [cpuSeconds(pid), cpuSeconds(pid, pid)];
				const perReq = (s: number) => ((s * 1e6) / r.requests.total).toFixed(1);
				v.cpu.push(((all1 - all0) * 1e6) / r.requests.total);
				console.log(`round ${round} ${v.name}: ${r.requests.average} req/s, CPU ${perReq(all1 - all0)} µs/req (main thread ${perReq(main1 - main0)}), non-2xx ${r.non2xx}`);
			}
		const medians = new Map<string, number[]>();
		for (const v of variants) {
			const sorted = [...v.cpu].sort((a, b) => a - b);
			const median = sorted[Math.floor(sorted.length / 2)];
			medians.set(v.name, [...(medians.get(v.name) ?? []), median]);
			console.log(`${v.name}: CPU µs/req median ${median.toFixed(1)}, range ${sorted[0].toFixed(1)}-${sorted[sorted.length - 1].toFixed(1)}`);
		}
		if (INSTANCES > 1)
			for (const [name, m] of medians)
				console.log(`${name}: ${m.length} processes, mean of their medians ${(m.reduce((a, b) => a + b, 0) / m.length).toFixed(1)} µs/req (${m.map(x => x.toFixed(1)).join(", ")})`);
	} finally {
		for (const v of variants) {
			const exited = new Promise(resolve => (v.proc.exitCode !== null || v.proc.signalCode !== null ? resolve(null) : v.proc.once("exit", resolve)));
			v.proc.kill();
			await exited;
			fs.rmSync(v.dataDir, { recursive: true, force: true });
			// With CACHER=redis://… a variant leaves its cache behind (an hour's TTL).
			await deleteKeysWithPrefix(`carsi-${v.namespace}-`);
		}
	}
	process.exit(0);
})().catch(err => {
	console.error(err);
	process.exit(1);
});
