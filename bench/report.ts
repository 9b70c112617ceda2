/**
 * The bench's markdown: one table per scenario with its ratios to the baselines of the same run,
 * then the issue's targets with the figure that meets or misses each.
 *
 *   npx ts-node --transpile-only bench/report.ts bench/results/<run>.json
 *
 * writes a run's markdown again from its JSON, by this report (a run made before the report changed).
 */
import fs from "node:fs";
import type { Distribution } from "./common";
import { SUSTAINED_SHARE, type OrderCheck } from "./scenarios";

/** One measure: a (scenario, target, ids) in one pass. */
export interface MeasureRow {
	scenario: string;
	target: string;
	distribution: Distribution | "-";
	pass: number;
	requests: number;
	reqPerSec: number;
	p50: number;
	p99: number;
	statuses: Record<string, number>;
	errors: number;
	timeouts: number;
	hitRatio: number | null;
	/** Share of one core over the measure, per process. */
	cpu: Record<string, number>;
	/** CPU µs per request of the target's own processes (not autocannon, not the servers): steadier than req/s on a busy machine. */
	cpuUsPerReq: number;
	/** An open load's requests a second (order-sustained: a share of the same pass's closed loop). */
	offeredPerSec?: number;
	orders?: OrderCheck;
	failed: boolean;
}
type M = MeasureRow;

export interface GrowthRow {
	size: number;
	endpoint: string;
	reqPerSec: number;
	p50: number;
	p99: number;
	failed: boolean;
}
export interface ReportInput {
	measures: M[];
	growth: GrowthRow[];
	machine: Record<string, unknown>;
	cmd: string;
	settings: { connections: number; duration: number; requests?: { read: number; order: number }; warmup: number; products: number; passes: number };
	seconds: number;
	targets: Array<{ name: string; describe: string }>;
	/** When the run ended (now, unless re-rendered). */
	at?: Date;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : undefined);
const fmt = (x: number | undefined, digits = 2) => (x === undefined || Number.isNaN(x) ? "–" : x.toFixed(digits));

export function report(input: ReportInput): string {
	const { measures, growth, machine, cmd, settings: s } = input;
	const ok = (m: M) => !m.failed;
	/** The measures that did not fail of a (scenario, target[, ids]), every pass. */
	const okOf = (scenario: string, target: string, dist?: string) => measures.filter(m => ok(m) && m.scenario === scenario && m.target === target && (!dist || m.distribution === dist));
	/** Mean req/s of a (scenario, target[, ids]) over its passes. */
	const rate = (scenario: string, target: string, dist?: string) => mean(okOf(scenario, target, dist).map(m => m.reqPerSec));
	const p99of = (scenario: string, target: string) => mean(okOf(scenario, target).map(m => m.p99));
	const ratio = (m: M, base: string) => {
		const b = rate(m.scenario === "list" || m.scenario === "list-uncached" ? "get" : m.scenario, base, m.distribution === "-" ? undefined : m.distribution);
		return b ? fmt(m.reqPerSec / b) : "–";
	};
	const cpuCell = (m: M) => Object.entries(m.cpu).filter(([, v]) => v >= 0.02).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
	const statusCell = (m: M) => Object.entries(m.statuses).map(([k, v]) => `${k}×${v}`).join(" ") + (m.errors + m.timeouts ? ` err×${m.errors + m.timeouts}` : "");
	const rows = (scenario: string) => measures.filter(m => m.scenario === scenario);
	const lines: string[] = [
		`# Çarşı bench, ${(input.at ?? new Date()).toISOString()}`,
		"",
		`\`${cmd}\` — ${s.connections} connections, ${s.requests ? `${s.requests.read} requests per measure (${s.requests.order} orders)` : `${s.duration} s per measure`} (${s.warmup} s warm-up per target), ${s.products} products, ${s.passes} pass(es) interleaved; ${input.seconds.toFixed(0)} s in all.`,
		"",
		`Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, ${machine.platform}; ` +
			Object.entries((machine.versions ?? {}) as Record<string, string>).map(([k, v]) => `${k} ${v}`).join(", ") +
			". autocannon runs on the same two cores as everything it measures.",
		"",
		"Targets: " + input.targets.map(t => `**${t.name}** (${t.describe})`).join("; ") + ".",
		"",
	];
	const section = (title: string, scenario: string, head: string[], cells: (m: M) => string[]) => {
		const rs = rows(scenario);
		if (!rs.length) return;
		lines.push(`## ${title}`, "", `| target | ids | pass | req/s | p50 ms | p99 ms | ${head.join(" | ")} | CPU µs/req | statuses | CPU (cores) |`, `|---|---|---|---:|---:|---:|${head.map(() => "---:|").join("")}---:|---|---|`);
		for (const m of rs.sort((a, b) => (a.target === b.target ? a.distribution.localeCompare(b.distribution) || a.pass - b.pass : 0)))
			lines.push(`| ${m.target}${m.failed ? " **FAILED**" : ""} | ${m.distribution} | ${m.pass} | ${m.reqPerSec} | ${m.p50} | ${m.p99} | ${cells(m).join(" | ")} | ${m.cpuUsPerReq} | ${statusCell(m)} | ${cpuCell(m)} |`);
		lines.push("");
	};
	section("Cached product read: GET /api/products/:id", "get", ["hit ratio", "× node+Redis", "× mw+Redis", "× 2-process AMQP"], m => [fmt(m.hitRatio ?? undefined, 3), ratio(m, "base-node-redis"), ratio(m, "base-mw-redis"), ratio(m, "base-amqp")]);
	section("Uncached product read (CACHER=off)", "get-uncached", ["× node+pg"], m => [ratio(m, "base-pg")]);
	section("List: GET /api/products with q, category and sort (60 questions)", "list", ["hit ratio"], m => [fmt(m.hitRatio ?? undefined, 3)]);
	section("List, uncached (CACHER=off)", "list-uncached", ["hit ratio"], m => [fmt(m.hitRatio ?? undefined, 3)]);
	const orderCells = (m: M) => [
		m.orders ? `${m.orders.placed} / ${m.orders.notified} / ${m.orders.duplicates}` : "–",
		m.orders ? `${m.orders.lagP50} / ${m.orders.lagP99}` : "–",
		m.orders?.relayP50 !== undefined ? `${m.orders.relayP50} / ${m.orders.relayP99}` : "–",
		m.orders ? String(m.orders.drainMs) : "–",
	];
	const orderHead = ["placed / notified / dup", "event lag p50 / p99 ms", "outbox → sent p50 / p99 ms", "drain ms"];
	section("Order placement: POST /api/orders, one unit, a random customer (closed loop: each connection sends as it is answered)", "order", ["× SQL of an order", ...orderHead], m => [ratio(m, "base-pg"), ...orderCells(m)]);
	section(`Order placement at a sustained rate: an open load of ${SUSTAINED_SHARE} × the same pass's closed-loop orders/s`, "order-sustained", ["offered /s", ...orderHead], m => [String(m.offeredPerSec ?? "–"), ...orderCells(m)]);

	// How much the cache buys where it is used: each cached target over the same reads with CACHER=off.
	const pairs = [
		["embedded", "embedded-nocache", "Memory cacher over SQLite, one process"],
		["embedded-redis", "embedded-nocache", "Redis cacher over SQLite, one process"],
		["distributed", "distributed-nocache", "Redis cacher over PostgreSQL, the cluster on AMQP"],
	] as const;
	/** "cached / uncached" req/s and their ratio, or dashes when either was not measured. */
	const versus = (a?: number, b?: number) => (a !== undefined && b !== undefined ? [`${a.toFixed(0)} / ${b.toFixed(0)}`, fmt(a / b)] : ["–", "–"]);
	const buys = pairs
		.map(([cached, uncached, what]) => ({ cached, uncached, what, get: [rate("get", cached, "uniform"), rate("get-uncached", uncached, "uniform")] as const }))
		.filter(b => b.get.every(x => x !== undefined));
	if (buys.length) {
		lines.push("## What the cache buys: the cached reads over the same reads with CACHER=off", "", "| cached | uncached | what | get req/s cached / uncached | × | list req/s cached / uncached | × |", "|---|---|---|---:|---:|---:|---:|");
		for (const { cached, uncached, what, get } of buys)
			lines.push(`| ${cached} | ${uncached} | ${what} | ${[...versus(...get), ...versus(rate("list", cached), rate("list-uncached", uncached))].join(" | ")} |`);
		lines.push("");
	}

	const transports = ["distributed", "distributed-nats", "distributed-redis"].filter(t => rate("get", t, "uniform") !== undefined);
	if (transports.length > 1) {
		const amqpRate = rate("get", "distributed", "uniform");
		const floor = rate("get", "base-amqp", "uniform");
		lines.push("## Transporters: distributed cached read, uniform ids", "", "| cluster | req/s (mean of passes) | p99 ms | × AMQP cluster | × 2-process AMQP floor |", "|---|---:|---:|---:|---:|");
		for (const t of transports) {
			const r = rate("get", t, "uniform")!;
			lines.push(`| ${t} | ${r.toFixed(0)} | ${fmt(p99of("get", t), 0)} | ${amqpRate ? fmt(r / amqpRate) : "–"} | ${floor ? fmt(r / floor) : "–"} |`);
		}
		lines.push("");
	}

	if (growth.length) {
		const sizes = [...new Set(growth.map(g => g.size))].sort((a, b) => a - b);
		const [small, large] = [sizes[0], sizes[sizes.length - 1]];
		lines.push(`## Growth: ${small} → ${large} products and orders (one process on PostgreSQL, CACHER=off)`, "", `| endpoint | p99 ms at ${small} | p99 ms at ${large} | × | req/s at ${small} | req/s at ${large} |`, "|---|---:|---:|---:|---:|---:|");
		for (const e of [...new Set(growth.map(g => g.endpoint))]) {
			const a = growth.find(g => g.size === small && g.endpoint === e);
			const b = growth.find(g => g.size === large && g.endpoint === e);
			lines.push(`| ${e}${a?.failed || b?.failed ? " **FAILED**" : ""} | ${a?.p99 ?? "–"} | ${b?.p99 ?? "–"} | ${a && b ? fmt(b.p99 / Math.max(a.p99, 1)) : "–"} | ${a?.reqPerSec ?? "–"} | ${b?.reqPerSec ?? "–"} |`);
		}
		lines.push("");
	}

	// The issue's targets, each against this run's means, with the spread of the measures behind
	// each mean (a verdict near its line may flip from pass to pass).
	type Verdict = [what: string, unit: string, x: number | undefined, pass: (x: number) => boolean, perMeasure?: number[]];
	const verdicts: Verdict[] = [];
	const r = (a?: number, b?: number) => (a !== undefined && b ? a / b : undefined);
	/** Each measure's req/s over the baseline's mean (same ids, as the tables' ratios). */
	const ratios = (scenario: string, target: string, baseScenario: string, base: string, dist?: string) =>
		okOf(scenario, target, dist).flatMap(m => {
			const b = rate(baseScenario, base, m.distribution === "-" ? undefined : m.distribution);
			return b ? [m.reqPerSec / b] : [];
		});
	const ratioVerdict = (what: string, scenario: string, target: string, base: string, min: number, baseScenario = scenario, dist?: string): Verdict => [
		what,
		"×",
		r(rate(scenario, target, dist), rate(baseScenario, base)),
		x => x >= min,
		ratios(scenario, target, baseScenario, base, dist),
	];
	const p99Verdict = (what: string, target: string): Verdict => [what, "ms", p99of("get", target), x => x < 25, okOf("get", target).map(m => m.p99)];
	verdicts.push(ratioVerdict("cached read, embedded (Memory) ≥ 0.8 × node+Redis", "get", "embedded", "base-node-redis", 0.8));
	verdicts.push(ratioVerdict("cached read, embedded with Redis ≥ 0.7 × node+Redis", "get", "embedded-redis", "base-node-redis", 0.7));
	verdicts.push(p99Verdict("cached read p99 < 25 ms at 50 connections (embedded)", "embedded"));
	verdicts.push(p99Verdict("cached read p99 < 25 ms at 50 connections (embedded, Redis)", "embedded-redis"));
	verdicts.push(ratioVerdict("a hit ≥ 3 × a miss (embedded vs embedded CACHER=off)", "get", "embedded", "embedded-nocache", 3, "get-uncached", "uniform"));
	verdicts.push(ratioVerdict("distributed cached read ≥ 0.9 × 2-process AMQP floor", "get", "distributed", "base-amqp", 0.9));
	verdicts.push(ratioVerdict("orders/s, embedded ≥ 0.5 × SQL of an order", "order", "embedded", "base-pg", 0.5));
	verdicts.push(ratioVerdict("orders/s, distributed ≥ 0.5 × SQL of an order", "order", "distributed", "base-pg", 0.5));
	verdicts.push(ratioVerdict("orders/s, one process on PostgreSQL ≥ 0.5 × SQL of an order", "order", "pg-nocache", "base-pg", 0.5));
	for (const t of ["embedded", "pg-nocache", "distributed"]) {
		const of = (s: string) => measures.filter(m => m.scenario === s && m.target === t && m.orders);
		const [closed, sustained] = [of("order"), of("order-sustained")];
		const all = [...closed, ...sustained];
		if (all.length) verdicts.push([`every order exactly one notification (${t})`, "orders without", all.reduce((a, m) => a + (m.orders!.placed - m.orders!.notified) + m.orders!.duplicates, 0), x => x === 0]);
		// A lag's verdict takes the worse measure.
		const lags = (ms: M[]) => ms.map(m => m.orders!.lagP99);
		if (sustained.length) verdicts.push([`event lag p99 < 250 ms at a sustained rate, ${SUSTAINED_SHARE} × the closed loop's (${t})`, "ms", Math.max(...lags(sustained)), x => x < 250, lags(sustained)]);
		if (closed.length) verdicts.push([`event lag p99 < 250 ms in the closed loop, at saturation (${t})`, "ms", Math.max(...lags(closed)), x => x < 250, lags(closed)]);
	}
	if (growth.length) {
		const sizes = [...new Set(growth.map(g => g.size))].sort((a, b) => a - b);
		for (const e of [...new Set(growth.map(g => g.endpoint))]) {
			const a = growth.find(g => g.size === sizes[0] && g.endpoint === e);
			const b = growth.find(g => g.size === sizes[sizes.length - 1] && g.endpoint === e);
			verdicts.push([`growth ${sizes[0]} → ${sizes[sizes.length - 1]}: ${e} p99 within 2×`, "×", a && b ? b.p99 / Math.max(a.p99, 1) : undefined, x => x <= 2]);
		}
	}
	lines.push("## Against the targets", "", "| target | this run | per measure | verdict |", "|---|---:|---:|---|");
	for (const [what, unit, x, pass, perMeasure] of verdicts) {
		// A figure that rounds onto the other side of its target (0.896 shown as 0.90 against 0.9)
		// is shown with one more digit.
		let digits = unit === "ms" || unit === "orders without" ? 0 : 2;
		if (x !== undefined && pass(Number(fmt(x, digits))) !== pass(x)) digits++;
		const [lo, hi] = perMeasure && perMeasure.length > 1 ? [fmt(Math.min(...perMeasure), digits), fmt(Math.max(...perMeasure), digits)] : [];
		const spread = lo === undefined ? "–" : lo === hi ? lo : `${lo}–${hi}`;
		lines.push(`| ${what} | ${x === undefined ? "–" : `${fmt(x, digits)} ${unit}`} | ${spread} | ${x === undefined ? "not measured" : pass(x) ? "met" : "**missed**"} |`);
	}
	lines.push(
		"",
		"Ratios: req/s over the mean of the baseline's passes (same ids). Per measure: the lowest and highest of the measures behind a verdict (each pass, each id draw). CPU µs/req: CPU time of the target's own processes per request (steadier than req/s while the machine is busy). CPU (cores): CPU seconds per wall second of each process, autocannon and the servers included. Outbox → sent: the outbox row's created_at to its sent_at, set when its batch was published (by the node that wrote it, or the relay): on RabbitMQ (the cluster) when the broker confirmed it, so it is the publisher's part of the lag; in one process, where a publish is the delivery, when every consumer had handled the batch, so it can exceed the lag.",
	);
	return lines.join("\n") + "\n";
}

if (require.main === module) {
	const file = process.argv[2];
	if (!file) throw new Error("usage: bench/report.ts <results.json>");
	const run = JSON.parse(fs.readFileSync(file, "utf8")) as ReportInput & { command: string };
	process.stdout.write(report({ ...run, cmd: run.command, at: fs.statSync(file).mtime }));
}
