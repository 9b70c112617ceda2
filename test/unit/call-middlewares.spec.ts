/**
 * lib/call-middlewares against Moleculer's own middlewares: the same spans for a sampled trace,
 * none for one that is not sampled (with the decision and the requestID passed down), and the same
 * request metrics, names, labels and values, as Moleculer's Metrics middleware records (the
 * durations handed over in one go leave the histogram as one observe each would); and timeouts,
 * fallbacks and the tracking of running calls as Moleculer's Timeout, Fallback and ContextTracker.
 */
import { ServiceBroker, TracerExporters, type BrokerOptions, type Context, type Errors } from "moleculer";
import { callMiddlewares, observeAll } from "../../lib/call-middlewares";
import { sleep } from "../support/wait";

interface Finished {
	name: string;
	traceID: string;
	parentID: string | null;
	sampled: boolean;
}

/** Every finished span, as the exporters see them. */
class Collector extends TracerExporters.Base {
	spans: Finished[] = [];
	override spanFinished(span: Finished): void {
		this.spans.push({ name: span.name, traceID: span.traceID, parentID: span.parentID ?? null, sampled: span.sampled });
	}
}

interface Seen {
	requestID: string | null;
	tracing: boolean | null;
	/** The handler runs inside a span (built, sampled or not). */
	span: boolean;
}

function node(ours: boolean, rate: number, collector: Collector, seen: Seen[]): ServiceBroker {
	const opts: BrokerOptions = {
		logger: false,
		metrics: { enabled: true },
		tracing: { enabled: true, sampling: { rate }, exporter: [collector as never], tags: { action: { params: false, meta: false, response: false } } },
		...(ours ? { internalMiddlewares: false, middlewares: callMiddlewares() } : {}),
	};
	const broker = new ServiceBroker(opts);
	broker.createService({
		name: "products",
		actions: {
			get: {
				params: { id: "number" },
				handler(ctx: Context<{ id: number }>) {
					seen.push({ requestID: ctx.requestID, tracing: ctx.tracing, span: !!(ctx as Context & { span?: unknown }).span });
					if (ctx.params.id < 0) return Promise.reject(new Error("no such product"));
					return { id: ctx.params.id };
				},
			},
		},
	});
	broker.createService({
		name: "api",
		actions: {
			rest: {
				handler(ctx: Context<{ id: number }>) {
					seen.push({ requestID: ctx.requestID, tracing: ctx.tracing, span: !!(ctx as Context & { span?: unknown }).span });
					return ctx.call("products.get", { id: ctx.params.id });
				},
			},
		},
	});
	return broker;
}

type Listed = Array<{ name: string; values: Array<Record<string, unknown>> }>;

/** The broker's metrics as its registry lists them (what the Prometheus reporter and $node.metrics read). */
const listed = (broker: ServiceBroker, opts: object = {}): Listed => (broker.metrics as unknown as { list(o: object): Listed }).list(opts);

/** The request metrics of a broker as the Prometheus reporter would read them (registry.list()). */
function requestMetrics(broker: ServiceBroker) {
	const list = listed(broker, { includes: "moleculer.request.**" });
	return list
		.map(m => ({
			name: m.name,
			values: m.values
				// A duration differs from run to run: of the time histogram, the count of each label set.
				.map(v => (m.name === "moleculer.request.time" ? { labels: v.labels, count: v.count } : { labels: v.labels, value: v.value }))
				.sort((a, b) => JSON.stringify(a.labels).localeCompare(JSON.stringify(b.labels))),
		}))
		.sort((a, b) => a.name.localeCompare(b.name));
}

async function drive(broker: ServiceBroker): Promise<void> {
	for (let i = 1; i <= 25; i++) await broker.call("api.rest", { id: i });
	await expect(broker.call("api.rest", { id: -1 })).rejects.toThrow("no such product");
	await expect(broker.call("products.get", { id: "nope" })).rejects.toThrow("Parameters validation error");
}

describe("per-call tracing", () => {
	it("gives a sampled trace the spans Moleculer's middleware gives it", async () => {
		const spansOf = async (ours: boolean) => {
			const collector = new Collector({});
			const seen: Seen[] = [];
			const broker = node(ours, 1, collector, seen);
			await broker.start();
			await broker.call("api.rest", { id: 7 }, { requestID: "trace-0001" });
			await broker.stop();
			return { spans: collector.spans, seen };
		};
		const theirs = await spansOf(false);
		const ours = await spansOf(true);
		const shape = (s: Finished[]) => s.map(x => ({ name: x.name, traceID: x.traceID, sampled: x.sampled, root: x.parentID === null }));
		expect(shape(ours.spans)).toEqual(shape(theirs.spans));
		expect(shape(ours.spans)).toEqual([
			{ name: "action 'products.get'", traceID: "trace-0001", sampled: true, root: false },
			{ name: "action 'api.rest'", traceID: "trace-0001", sampled: true, root: true },
		]);
		// The child's parent is the root's span.
		const [child, root] = ours.spans;
		expect(child.parentID).not.toBeNull();
		expect(ours.seen).toEqual([
			{ requestID: "trace-0001", tracing: true, span: true },
			{ requestID: "trace-0001", tracing: true, span: true },
		]);
		expect(root.traceID).toBe(child.traceID);
	});

	it("builds no span for a trace that is not sampled and passes the decision down", async () => {
		const collector = new Collector({});
		const seen: Seen[] = [];
		const broker = node(true, 0, collector, seen);
		await broker.start();
		try {
			const answer = await broker.call("api.rest", { id: 3 }, { requestID: "trace-0002" });
			expect(answer).toEqual({ id: 3 });
			expect(seen).toEqual([
				{ requestID: "trace-0002", tracing: false, span: false },
				{ requestID: "trace-0002", tracing: false, span: false },
			]);
			expect(collector.spans).toEqual([]);
		} finally {
			await broker.stop();
		}
	});
});

describe("request metrics", () => {
	it("records the names, labels and values Moleculer's Metrics middleware records", async () => {
		const metricsOf = async (ours: boolean) => {
			const broker = node(ours, 0, new Collector({}), []);
			await broker.start();
			try {
				await drive(broker);
				return requestMetrics(broker);
			} finally {
				await broker.stop();
			}
		};
		const theirs = await metricsOf(false);
		const ours = await metricsOf(true);
		expect(ours).toEqual(theirs);
		// And they are what the calls were: 26 through api.rest, 27 products.get (one direct, refused).
		const total = ours.find(m => m.name === "moleculer.request.total")!.values;
		expect(total).toEqual(
			expect.arrayContaining([
				expect.objectContaining({ labels: { service: "api", action: "api.rest", caller: null, type: "local" }, value: 26 }),
				expect.objectContaining({ labels: { service: "products", action: "products.get", caller: "api", type: "local" }, value: 26 }),
				expect.objectContaining({ labels: { service: "products", action: "products.get", caller: null, type: "local" }, value: 1 }),
			]),
		);
		expect(ours.find(m => m.name === "moleculer.request.active")!.values.every(v => (v as { value?: unknown }).value === 0)).toBe(true);
		expect(ours.find(m => m.name === "moleculer.request.error.total")!.values.length).toBeGreaterThan(0);
	});
});

describe("durations added in one go", () => {
	it("leave a histogram as one observe per value leaves it: sum, count, last value, buckets, quantiles", async () => {
		const broker = new ServiceBroker({ logger: false, metrics: { enabled: true } });
		const metrics = broker.metrics as unknown as {
			register(o: object): unknown;
			observe(name: string, v: number, labels: object): unknown;
			getMetric(name: string): unknown;
		};
		for (const name of ["one.by.one", "in.one.go"]) metrics.register({ name, type: "histogram", labelNames: ["action"], buckets: true, quantiles: true });
		// Below the first bound (1 ms), on bounds, between them, past the last (10,000 ms).
		const values = [0.02, 1, 3.5, 5, 0.4, 250, 999.9, 12_000, 10_000, 0.07, 42, 7];
		const labels = { action: "products.get" };
		for (const v of values) metrics.observe("one.by.one", v, labels);
		observeAll(metrics.getMetric("in.one.go") as never, labels, values);
		// And a label set that sees one value, and another that sees none.
		metrics.observe("one.by.one", 3, { action: "api.rest" });
		observeAll(metrics.getMetric("in.one.go") as never, { action: "api.rest" }, [3]);
		observeAll(metrics.getMetric("in.one.go") as never, { action: "users.get" }, []);
		const [oneByOne, inOneGo] = ["one.by.one", "in.one.go"].map(name =>
			listed(broker, { includes: name })[0].values.map(({ timestamp: _t, ...v }) => v),
		);
		expect(inOneGo).toEqual(oneByOne);
		expect(oneByOne).toEqual(
			expect.arrayContaining([
				expect.objectContaining({ labels, count: 12, sum: values.reduce((a, b) => a + b, 0), buckets: expect.objectContaining({ 1: 4, 5: 6, 10: 7, 10000: 11 }) }),
			]),
		);
		await broker.stop();
	});
});

describe("metric rates", () => {
	/** The metrics of a broker that keep a per-minute rate, and the label sets that have one. */
	async function ratesOf(ours: boolean) {
		const broker = new ServiceBroker({
			logger: false,
			cacher: "Memory",
			metrics: { enabled: true },
			...(ours ? { internalMiddlewares: false, middlewares: callMiddlewares() } : {}),
		});
		broker.createService({ name: "products", actions: { get: { cache: { keys: ["id"] }, handler: (ctx: Context<{ id: number }>) => ({ id: ctx.params.id }) } } });
		await broker.start();
		try {
			for (let i = 0; i < 5; i++) await broker.call("products.get", { id: i % 2 });
			const store = (broker.metrics as unknown as { store: Map<string, { rate?: unknown; values: Map<string, { rate?: unknown }> }> }).store;
			const list = listed(broker);
			return {
				withRate: [...store.entries()].filter(([, m]) => m.rate).map(([name]) => name),
				itemsWithRate: [...store.values()].flatMap(m => [...m.values.values()]).filter(v => v.rate).length,
				listedRates: list.flatMap(m => m.values).filter(v => "rate" in v).length,
				requests: list.find(m => m.name === "moleculer.request.total")?.values.map(v => v.value),
				cacheGets: list.find(m => m.name === "moleculer.cacher.get.total")?.values.map(v => v.value),
			};
		} finally {
			await broker.stop();
		}
	}

	it("keeps none, for the metrics registered before the middlewares (cacher) and after, while counting the same", async () => {
		const theirs = await ratesOf(false);
		const ours = await ratesOf(true);
		// Moleculer keeps them: what this test would see if the rates were left on.
		expect(theirs.withRate).toEqual(expect.arrayContaining(["moleculer.request.total", "moleculer.request.time", "moleculer.cacher.get.total"]));
		expect(theirs.itemsWithRate).toBeGreaterThan(0);
		expect(ours).toEqual({ withRate: [], itemsWithRate: 0, listedRates: 0, requests: theirs.requests, cacheGets: theirs.cacheGets });
		expect(ours.requests).toEqual([5]);
		expect(ours.cacheGets).toEqual([5]);
	});
});

describe("timeouts, fallbacks and tracking", () => {
	/** A broker with Moleculer's middlewares or ours, a slow action, and a parent that calls a child after a while. */
	function timed(ours: boolean, seen: { childTimeout?: number; order: string[] }) {
		const broker = new ServiceBroker({
			logger: false,
			metrics: { enabled: true },
			requestTimeout: 5_000,
			tracking: { enabled: true, shutdownTimeout: 5_000 },
			...(ours ? { internalMiddlewares: false, middlewares: callMiddlewares() } : {}),
		});
		broker.createService({
			name: "slow",
			actions: {
				wait: {
					params: { ms: "number" },
					async handler(ctx: Context<{ ms: number }>) {
						await sleep(ctx.params.ms);
						seen.order.push(`waited ${ctx.params.ms}`);
						return ctx.params.ms;
					},
				},
				child(ctx: Context) {
					seen.childTimeout = Number(ctx.options.timeout);
					return "child";
				},
				async parent(ctx: Context) {
					await sleep(100);
					return ctx.call("slow.child");
				},
				fails() {
					return Promise.reject(new Error("refused"));
				},
				withFallback: {
					fallback: async (_ctx: Context, err: Error) => `fell back from ${err.message}`,
					handler: () => Promise.reject(new Error("refused")),
				},
			},
		});
		return broker;
	}

	async function behaviour(ours: boolean) {
		const seen: { childTimeout?: number; order: string[] } = { order: [] };
		const broker = timed(ours, seen);
		await broker.start();
		const timedOut = (await broker.call("slow.wait", { ms: 300 }, { timeout: 50 }).catch((err: Errors.MoleculerError) => err)) as Errors.MoleculerError;
		const failed = await broker.call("slow.fails", {}, { timeout: 1_000 }).catch((err: Error) => err.message);
		const fallbacks = [
			await broker.call("slow.withFallback"),
			await broker.call("slow.fails", {}, { fallbackResponse: "the call's fallback" }),
			await broker.call("slow.fails", {}, { fallbackResponse: (_ctx: Context, err: Error) => `fell back from ${err.message} too` }),
		];
		await broker.call("slow.parent", {}, { timeout: 1_000 });
		const withoutTimeout = await broker.call("slow.wait", { ms: 20 }, { timeout: 0 });
		const timeouts = listed(broker, { includes: "moleculer.request.timeout.total" });
		const trackedNow = () => (broker.getLocalService("slow") as unknown as { _trackedContexts: unknown[] })._trackedContexts.length;
		// The call that timed out is still running (a timeout answers the caller, it stops nothing).
		const trackedWhileRunning = trackedNow();
		while (!seen.order.includes("waited 300")) await sleep(10);
		const tracked = [trackedWhileRunning, trackedNow()];
		// A call still running when the broker stops is waited for.
		const running = broker.call("slow.wait", { ms: 200 }).then(() => seen.order.push("call answered"));
		await sleep(20);
		await broker.stop();
		seen.order.push("broker stopped");
		await running;
		return {
			timedOut: { name: timedOut.name, message: timedOut.message, code: timedOut.code, type: timedOut.type, data: timedOut.data, retryable: timedOut.retryable },
			failed,
			fallbacks,
			childTimeout: seen.childTimeout!,
			withoutTimeout,
			timeouts: timeouts.map(m => m.values.map(v => ({ labels: v.labels, value: v.value }))),
			tracked,
			order: seen.order.filter(o => o !== "waited 300"),
		};
	}

	it("time out, pass the time left down, fall back, and wait for running calls as Moleculer's do", async () => {
		const theirs = await behaviour(false);
		const ours = await behaviour(true);
		const { childTimeout: theirChild, ...theirRest } = theirs;
		const { childTimeout: ourChild, ...ourRest } = ours;
		expect(ourRest).toEqual(theirRest);
		expect(ours.timedOut).toEqual(expect.objectContaining({ name: "RequestTimeoutError", code: 504, data: { action: "slow.wait", nodeID: expect.any(String) } }));
		expect(ours.timeouts).toEqual([[{ labels: { service: "slow", action: "slow.wait" }, value: 1 }]]);
		expect(ours.tracked).toEqual([1, 0]);
		expect(ours.failed).toBe("refused");
		expect(ours.fallbacks).toEqual(["fell back from refused", "the call's fallback", "fell back from refused too"]);
		expect(ours.order).toEqual(["waited 20", "waited 200", "call answered", "broker stopped"]);
		// The child gets what its parent has left of its second: about 900 ms.
		for (const child of [theirChild, ourChild]) {
			expect(child).toBeGreaterThan(700);
			expect(child).toBeLessThan(1_000);
		}
	});
});

describe("action hooks", () => {
	/** Error hooks as db.mixin's ("*"), by name and on the action; a service with a before hook beside. */
	async function hooked(ours: boolean) {
		const broker = new ServiceBroker({ logger: false, ...(ours ? { internalMiddlewares: false, middlewares: callMiddlewares() } : {}) });
		const order: string[] = [];
		broker.createService({
			name: "store",
			hooks: {
				error: {
					"*"(this: { name: string }, _ctx: Context, err: Error) {
						order.push(`* in ${this.name}`);
						if (err.message === "connection lost") throw new Error("unavailable");
						throw err;
					},
					// An error hook may answer instead (Moleculer's typings say it returns nothing).
					"re*": ((_ctx: Context, err: Error) => {
						order.push("re*");
						if (err.message === "recoverable") return "recovered";
						throw err;
					}) as never,
				},
			},
			actions: {
				read: (ctx: Context<{ fail?: string }>) => (ctx.params.fail ? Promise.reject(new Error(ctx.params.fail)) : `read ${Object.keys(ctx.params).length}`),
				throws: () => {
					throw new Error("connection lost");
				},
				own: {
					hooks: {
						error(_ctx: Context, err: Error) {
							order.push("own");
							throw new Error(`own: ${err.message}`);
						},
					},
					handler: () => Promise.reject(new Error("refused")),
				},
			},
		});
		broker.createService({
			name: "shaped",
			hooks: { before: { "*"(ctx: Context<{ n: number }>) { ctx.params.n *= 2; } }, error: { "*"(_ctx: Context, err: Error) { throw new Error(`shaped: ${err.message}`); } } },
			actions: { double: (ctx: Context<{ n: number }>) => ctx.params.n, fail: () => Promise.reject(new Error("no")) },
		});
		await broker.start();
		const settle = (p: Promise<unknown>) => p.then(v => ({ value: v }), (err: Error) => ({ error: err.message }));
		const results = [
			await settle(broker.call("store.read", {})),
			await settle(broker.call("store.read", { fail: "connection lost" })),
			await settle(broker.call("store.read", { fail: "recoverable" })),
			await settle(broker.call("store.read", { fail: "other" })),
			await settle(broker.call("store.throws")),
			await settle(broker.call("store.own")),
			await settle(broker.call("shaped.double", { n: 21 })),
			await settle(broker.call("shaped.fail")),
		];
		await broker.stop();
		return { results, order };
	}

	it("run error hooks as Moleculer's do, and leave an action with a before hook to Moleculer's", async () => {
		const theirs = await hooked(false);
		const ours = await hooked(true);
		expect(ours).toEqual(theirs);
		expect(ours.results).toEqual([
			{ value: "read 0" },
			{ error: "unavailable" },
			{ value: "recovered" },
			{ error: "other" },
			{ error: "unavailable" },
			{ error: "own: refused" },
			{ value: 42 },
			{ error: "shaped: no" },
		]);
	});
});
