/**
 * Summarises V8 CPU profiles (`.cpuprofile`, written by `node --cpu-prof`, e.g. by
 * `npm run bench -- --profile <dir>`): self time per function and per package, hottest first.
 * The same files open as flame graphs in Chrome DevTools (Performance → Load profile) or speedscope.
 *
 *   npx ts-node --transpile-only bench/profile-summary.ts <file-or-dir>... [--top 30]
 */
import fs from "node:fs";
import path from "node:path";

interface Node {
	id: number;
	callFrame: { functionName: string; url: string; lineNumber: number };
	children?: number[];
}
interface Profile {
	nodes: Node[];
	samples: number[];
	timeDeltas: number[];
}

const args = process.argv.slice(2);
const topAt = args.indexOf("--top");
const TOP = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 30;
const files = args.flatMap(a => (fs.statSync(a).isDirectory() ? fs.readdirSync(a).filter(f => f.endsWith(".cpuprofile")).map(f => path.join(a, f)) : [a]));

/** Where a frame comes from: a package under node_modules, our code (its top folder), or node itself. */
function owner(url: string): string {
	if (!url) return "(native/gc/idle)";
	const nm = url.lastIndexOf("node_modules/");
	if (nm >= 0) {
		const rest = url.slice(nm + "node_modules/".length).split("/");
		return rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
	}
	if (url.startsWith("node:")) return "node";
	const dist = url.indexOf("/dist/");
	if (dist >= 0) return `ours: ${url.slice(dist + 6).split("/").slice(0, 2).join("/")}`;
	return url.replace(/^file:\/\//, "");
}

for (const file of files) {
	const p = JSON.parse(fs.readFileSync(file, "utf8")) as Profile;
	const byId = new Map(p.nodes.map(n => [n.id, n]));
	const self = new Map<number, number>();
	p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
	const total = [...self.values()].reduce((a, b) => a + b, 0);
	const fn = new Map<string, number>();
	const pkg = new Map<string, number>();
	for (const [id, us] of self) {
		const { callFrame: c } = byId.get(id)!;
		if (c.functionName === "(idle)" || c.functionName === "(program)") continue;
		const where = c.url ? `${path.basename(c.url)}:${c.lineNumber + 1}` : "";
		const key = `${c.functionName || "(anonymous)"} ${where} [${owner(c.url)}]`;
		fn.set(key, (fn.get(key) ?? 0) + us);
		const o = c.functionName === "(garbage collector)" ? "(gc)" : owner(c.url);
		pkg.set(o, (pkg.get(o) ?? 0) + us);
	}
	const idle = [...self].filter(([id]) => ["(idle)", "(program)"].includes(byId.get(id)!.callFrame.functionName)).reduce((a, [, us]) => a + us, 0);
	const busy = total - idle;
	const pct = (us: number) => `${((us / busy) * 100).toFixed(1).padStart(5)}%`;
	console.log(`\n${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (shares below are of busy time)`);
	console.log("\nBy package:");
	for (const [k, us] of [...pkg].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${pct(us)}  ${k}`);
	console.log(`\nTop ${TOP} functions by self time:`);
	for (const [k, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`  ${pct(us)}  ${k}`);
}
