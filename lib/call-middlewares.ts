/**
 * The broker's per-call middlewares, in Moleculer's own order, with six of them lighter on the path
 * every request takes (a cached read makes two calls: `api.rest` and `products.get`):
 *
 * - Tracing: Moleculer's middleware builds a span and its tags for every call, also for the
 *   calls of a trace that was not sampled, and throws them away. Here a call whose trace is not
 *   sampled runs without a span; a sampled one goes through Moleculer's middleware unchanged, so
 *   what the exporters see is the same. A root call decides its sampling as Moleculer does
 *   (`tracer.shouldSample`), once, and its children inherit the decision through `ctx.tracing`
 *   (locally and in the packet to another node).
 * - Metrics: the same metrics under the same names and labels as Moleculer's middleware
 *   (`moleculer.request.total`, `.active`, `.error.total`, `.time`, `.levels`), the counters and
 *   durations added up per action and caller and handed to the registry when it is read. Moleculer's
 *   per-minute rates are switched off (withoutMetricRates: no reporter reads them, and on Node 20
 *   they keep V8 from optimising every metric update).
 *
 * - ActionHook, Timeout, ContextTracker and Fallback: the same behaviour as Moleculer's, with fewer
 *   promises (ActionHook: see LeanActionHook).
 *   Moleculer's timeout races the call against a timer promise (`Promise.race`, then `.then`,
 *   `.catch` and its own `.catch`: seven promises a call), its tracker chains `.then` and `.catch`,
 *   and its fallback catches every call's error; here a call with a timeout makes two promises, a
 *   tracked call one, and only a call with a fallback goes through Moleculer's fallback. On Node 20
 *   every promise also runs the request-id scope's hook (lib/logging), so each costs twice.
 *
 * The rest are Moleculer's, by name. `internalMiddlewares: false` in moleculer.config.ts keeps the
 * broker from adding its own list a second time.
 */
import type { Context, Middleware, ServiceBroker } from "moleculer";
import { Errors, Middlewares, METRIC as TYPED_METRIC } from "moleculer";
import { requestScope } from "./request-scope";

type Handler = (ctx: Context) => Promise<unknown>;
interface ActionDef {
	name: string;
	service?: { fullName?: string } | null;
	tracing?: unknown;
}
type MiddlewareObject = Record<string, unknown> & { localAction?: (h: Handler, a: ActionDef) => Handler };
type Factory = (broker: ServiceBroker) => MiddlewareObject;

// Moleculer's typings list only the metric types; the names are there at run time.
const METRIC = TYPED_METRIC as unknown as Record<
	"MOLECULER_REQUEST_TOTAL" | "MOLECULER_REQUEST_ACTIVE" | "MOLECULER_REQUEST_LEVELS" | "MOLECULER_REQUEST_TIME" | "MOLECULER_REQUEST_ERROR_TOTAL" | "MOLECULER_REQUEST_TIMEOUT_TOTAL",
	string
>;

const builtIn = (name: string): Factory => (Middlewares as unknown as Record<string, Factory>)[name];

/** Moleculer's Tracing middleware; its localAction skips the span of a call that is not sampled. */
export function SampledTracing(broker: ServiceBroker): MiddlewareObject {
	const inner = builtIn("Tracing").call(broker, broker);
	const full = inner.localAction;
	if (!full) return inner;
	const tracer = broker.tracer as unknown as { shouldSample(span: { priority: number }): boolean };
	// What shouldSample reads of a span: only its priority (Moleculer's default is 5).
	const rootSpan = { priority: 5 };
	return {
		...inner,
		localAction(this: unknown, handler: Handler, action: ActionDef): Handler {
			const traced = full.call(this, handler, action);
			if (traced === handler) return handler; // tracing switched off for this action
			return function sampledTracing(ctx: Context): Promise<unknown> {
				const c = ctx as Context & { tracing: boolean | null };
				if (c.tracing == null) c.tracing = tracer.shouldSample(rootSpan);
				return c.tracing ? traced(ctx) : handler(ctx);
			};
		},
	};
}

interface RateOwner {
	rate?: unknown;
	values: Map<string, { rate?: { timer?: NodeJS.Timeout } }>;
}

/**
 * Switches off the per-minute rate that Moleculer keeps beside many of its metrics (`rate: true`:
 * request, event, cacher and transit counters, `moleculer.request.time`), for the metrics
 * registered so far and for those registered later.
 *
 * No reporter of ours writes a rate (the Prometheus text has counters, buckets and quantiles; a
 * rate is only a field of `registry.list()`), and keeping them costs much more than they are worth
 * on Node 20: every five seconds each rate stores a new fraction, and from the first of these on
 * V8 throws away every attempt to optimise the functions that update a metric (histogram
 * `observe`, counter `increment`: "Maps became deprecated during optimization" under
 * `node --trace-opt`, about 1,000 in 10 s) and tries again, on its compiler threads, for as long
 * as the process runs. On the embedded default's cached read that was 160-190 µs of CPU per
 * request against 97-99 without the rates and 84-87 with metrics off (bench/call-cpu.ts does not
 * show it: it ends before the first tick).
 */
export function withoutMetricRates(registry: ServiceBroker["metrics"]): void {
	const r = registry as unknown as { store: Map<string, RateOwner>; register(opts: Record<string, unknown>): unknown };
	for (const metric of r.store.values()) {
		metric.rate = false;
		for (const item of metric.values.values())
			if (item.rate) {
				clearInterval(item.rate.timer);
				item.rate = undefined;
			}
	}
	const register = r.register.bind(registry);
	r.register = opts => register(opts?.rate ? { ...opts, rate: false } : opts);
}

/** Each registry's flush of the counts not yet handed to it. */
const pending = new WeakMap<object, () => void>();

/** Hands the request counts added up so far to `registry` (a no-op without RequestMetrics). */
export function flushCallMetrics(registry: object): void {
	pending.get(registry)?.();
}

interface CallCounts {
	labels: Record<string, unknown>;
	/** Calls started, and finished, since the last flush. */
	started: number;
	finished: number;
	levels: Map<number, { labels: Record<string, unknown>; count: number }>;
	/** The durations (ms) of the calls finished since the last flush. */
	times: number[];
}

/** What observeAll touches of Moleculer's HistogramMetric and its items. */
interface Histogram {
	buckets?: number[];
	observe(value: number, labels: Record<string, unknown>, timestamp?: number): HistogramItem;
	changed(value: number, labels: Record<string, unknown>, timestamp: number): void;
}
interface HistogramItem {
	sum: number;
	count: number;
	lastValue: number;
	timestamp: number;
	bucketValues?: Record<number, number>;
	quantileValues?: { add(value: number): void };
	rate?: { update(count: number): void };
}

/**
 * Adds `values` to one label set of Moleculer's histogram as that many `observe` calls would:
 * the first through `observe` (which makes the item when it is new), the rest added up in plain
 * numbers and written once: sum, count, last value, each bucket's count (a bucket counts the values
 * up to its bound) and every value as a quantile sample. Moleculer's `observe` writes each of its
 * bucket counts per call, and those counts sit on an object keyed by the bounds (1 to 10,000 ms),
 * which V8 keeps as a dictionary: most of a call's metrics CPU.
 */
export function observeAll(histogram: Histogram, labels: Record<string, unknown>, values: number[]): void {
	if (values.length === 0) return;
	const item = histogram.observe(values[0], labels);
	if (values.length === 1) return;
	const bounds = histogram.buckets ?? [];
	// How many of the values have each bound as the first they fit under.
	const firstFit = new Array<number>(bounds.length).fill(0);
	let sum = 0;
	for (let k = 1; k < values.length; k++) {
		const v = values[k];
		sum += v;
		item.quantileValues?.add(v);
		let i = 0;
		while (i < bounds.length && v > bounds[i]) i++;
		if (i < bounds.length) firstFit[i]++;
	}
	if (item.bucketValues) {
		let under = 0;
		for (let i = 0; i < bounds.length; i++) {
			under += firstFit[i];
			if (under > 0) item.bucketValues[bounds[i]] += under;
		}
	}
	item.sum += sum;
	item.count += values.length - 1;
	item.lastValue = values[values.length - 1];
	item.timestamp = Date.now();
	item.rate?.update(item.count);
	histogram.changed(item.lastValue, labels, item.timestamp);
}

/**
 * Moleculer's request metrics, same names, labels and values. Moleculer's middleware updates four
 * labelled metrics at each call's start and end (each update hashes its labels, a gauge's twice);
 * here the counters (`.total`, `.active`, `.levels`) add up in plain numbers per action and caller,
 * and the durations (`.time`) in a list, and all reach the registry whenever it is read (`list()`:
 * the Prometheus text, the console) and once a second (a duration joins the quantiles' time window
 * up to a second late). A call's error (`.error.total`) is counted as it happens.
 */
export function RequestMetrics(broker: ServiceBroker): MiddlewareObject {
	const inner = builtIn("Metrics").call(broker, broker);
	if (!broker.isMetricsEnabled()) return inner;
	withoutMetricRates(broker.metrics);
	const metrics = broker.metrics;
	const registry = metrics as unknown as { list(...args: unknown[]): unknown };
	const all: CallCounts[] = [];

	const flush = () => {
		const time = metrics.getMetric(METRIC.MOLECULER_REQUEST_TIME) as unknown as Histogram;
		for (const c of all) {
			if (c.started === 0 && c.finished === 0) continue;
			if (c.started > 0) metrics.increment(METRIC.MOLECULER_REQUEST_TOTAL, c.labels, c.started);
			metrics.increment(METRIC.MOLECULER_REQUEST_ACTIVE, c.labels, c.started - c.finished);
			for (const level of c.levels.values())
				if (level.count > 0) {
					metrics.increment(METRIC.MOLECULER_REQUEST_LEVELS, level.labels, level.count);
					level.count = 0;
				}
			c.started = c.finished = 0;
			if (c.times.length > 0) {
				observeAll(time, c.labels, c.times);
				c.times.length = 0;
			}
		}
	};
	// Whoever reads the registry sees every call so far: list() here, the Prometheus reporter
	// (which walks the store itself) through flushCallMetrics.
	pending.set(metrics, flush);
	const list = registry.list.bind(registry);
	registry.list = (...args: unknown[]) => {
		flush();
		return list(...args);
	};
	let timer: NodeJS.Timeout | undefined;

	const wrap = (type: "local" | "remote") =>
		function (handler: Handler, action: ActionDef): Handler {
			const service = action.service?.fullName ?? null;
			const name = action.name;
			const byCaller = new Map<string | null, CallCounts>();
			const countsOf = (caller: string | null): CallCounts => {
				let c = byCaller.get(caller);
				if (!c) {
					c = { labels: { service, action: name, caller, type }, started: 0, finished: 0, levels: new Map(), times: [] };
					byCaller.set(caller, c);
					all.push(c);
				}
				return c;
			};
			return function requestMetrics(ctx: Context): Promise<unknown> {
				const c = countsOf((ctx as Context & { caller?: string | null }).caller ?? null);
				c.started++;
				let level = c.levels.get(ctx.level);
				if (!level) c.levels.set(ctx.level, (level = { labels: { service, action: name, caller: c.labels.caller, level: ctx.level }, count: 0 }));
				level.count++;
				const started = process.hrtime.bigint();
				const done = () => {
					c.finished++;
					c.times.push(Number(process.hrtime.bigint() - started) / 1e6);
				};
				return handler(ctx).then(
					res => {
						done();
						return res;
					},
					(err: { name?: string; code?: unknown; type?: unknown } | undefined) => {
						done();
						metrics.increment(METRIC.MOLECULER_REQUEST_ERROR_TOTAL, {
							...c.labels,
							errorName: err ? err.name : null,
							errorCode: err ? err.code : null,
							errorType: err ? err.type : null,
						});
						throw err;
					},
				);
			};
		};
	return {
		...inner,
		localAction: wrap("local"),
		remoteAction: wrap("remote"),
		started() {
			timer = setInterval(flush, 1000);
			timer.unref();
		},
		stopped() {
			if (timer) clearInterval(timer);
			flush();
		},
	};
}

interface TimedContext extends Context {
	startHrTime?: [number, number];
}

/**
 * Moleculer's Timeout middleware (`moleculer.request.timeout.total`, its warning, RequestTimeoutError
 * with the action and node): a call's timeout is its own option, else the action's, else the
 * broker's `requestTimeout`; `startHrTime` is what Context.call reads to give a child call the
 * time its parent has left. One timer a call, cleared when the call settles, as Moleculer's.
 */
export function LeanTimeout(broker: ServiceBroker): MiddlewareObject {
	const inner = builtIn("Timeout").call(broker, broker);
	const wrap = (handler: Handler, action: ActionDef & { timeout?: number }): Handler => {
		const actionTimeout = action.timeout;
		const name = action.name;
		const service = action.service?.fullName ?? null;
		return function leanTimeout(ctx: TimedContext): Promise<unknown> {
			const options = ctx.options as { timeout?: number | null };
			if (options.timeout == null) options.timeout = actionTimeout ?? broker.options.requestTimeout;
			const ms = Number(options.timeout);
			if (!(ms > 0)) return handler(ctx);
			if (!ctx.startHrTime) ctx.startHrTime = process.hrtime();
			const p = handler(ctx);
			return new Promise((resolve, reject) => {
				const timer = setTimeout(() => {
					// A timer runs outside the request's scope (lib/request-scope): its warning names the request itself.
					const warn = () => broker.logger.warn(`Request '${name}' is timed out.`, { requestID: ctx.requestID, nodeID: ctx.nodeID, timeout: ms });
					if (ctx.requestID) requestScope.run(ctx.requestID, warn);
					else warn();
					broker.metrics.increment(METRIC.MOLECULER_REQUEST_TIMEOUT_TOTAL, { service, action: name });
					reject(new Errors.RequestTimeoutError({ action: name, nodeID: ctx.nodeID }));
				}, ms);
				p.then(
					res => {
						clearTimeout(timer);
						resolve(res);
					},
					err => {
						clearTimeout(timer);
						reject(err);
					},
				);
			});
		};
	};
	return { ...inner, localAction: wrap, remoteAction: wrap };
}

/**
 * Moleculer's Fallback middleware, run only for a call that has a fallback (a `fallbackResponse`
 * option, or a local action's `fallback`): Moleculer's catches every call's error to look for one.
 */
export function LeanFallback(broker: ServiceBroker): MiddlewareObject {
	const inner = builtIn("Fallback").call(broker, broker);
	const wrap = (type: "localAction" | "remoteAction") => (handler: Handler, action: ActionDef & { fallback?: unknown }): Handler => {
		const full = (inner[type] as (h: Handler, a: ActionDef) => Handler).call(broker, handler, action);
		const ownFallback = !!(action.fallback && action.service);
		return function leanFallback(ctx: Context): Promise<unknown> {
			return ownFallback || (ctx.options as { fallbackResponse?: unknown }).fallbackResponse ? full(ctx) : handler(ctx);
		};
	};
	return { ...inner, localAction: wrap("localAction"), remoteAction: wrap("remoteAction") };
}

interface HookedAction extends ActionDef {
	hooks?: { before?: unknown; after?: unknown };
	service?: (ActionDef["service"] & { schema?: { hooks?: { before?: unknown; after?: unknown } } }) | null;
}

/**
 * Moleculer's ActionHook, lighter for an action whose only hooks are error hooks (db.mixin's
 * `error: { "*": … }`, which answers a lost database with 503, is on every action of products,
 * users and notifications). Moleculer's wrapper starts from `Promise.resolve()`, calls the handler
 * in a `then` and catches in another: three promises a call. Here the handler is called at once
 * and only a failure goes through Moleculer's wrapper, built around a handler that fails with the
 * same error, so the error hooks run in Moleculer's order with its matching. An action or service
 * with any before or after hook keeps Moleculer's wrapper.
 */
export function LeanActionHook(broker: ServiceBroker): MiddlewareObject {
	const inner = builtIn("ActionHook").call(broker, broker);
	const full = inner.localAction as (h: Handler, a: ActionDef) => Handler;
	return {
		...inner,
		localAction(handler: Handler, action: HookedAction): Handler {
			const serviceHooks = action.service?.schema?.hooks;
			if (serviceHooks?.before || serviceHooks?.after || action.hooks?.before || action.hooks?.after) return full.call(broker, handler, action);
			const failures = new WeakMap<Context, unknown>();
			const fail: Handler = ctx => Promise.reject(failures.get(ctx));
			const onError = full.call(broker, fail, action);
			if (onError === fail) return handler; // no hooks at all
			return function leanActionHook(ctx: Context): Promise<unknown> {
				let p: Promise<unknown>;
				try {
					p = handler(ctx);
				} catch (err) {
					p = Promise.reject(err);
				}
				return p.catch(err => {
					failures.set(ctx, err);
					return onError(ctx);
				});
			};
		},
	};
}

interface Tracked {
	_trackedContexts: Context[];
}

/**
 * Moleculer's ContextTracker (what a stopping service or broker waits for): a call is in its
 * service's list (a remote one in the broker's) from its start until it settles. Its lifecycle
 * hooks are Moleculer's; only the per-call wrapper is lighter.
 */
export function LeanContextTracker(broker: ServiceBroker): MiddlewareObject {
	const inner = builtIn("ContextTracker").call(broker, broker);
	const tracking = (broker.options.tracking ?? {}) as { enabled?: boolean };
	if (!tracking.enabled) return inner;
	const listOf = (ctx: Context) => ((ctx.service as unknown as Tracked | undefined) ?? (ctx.broker as unknown as Tracked))._trackedContexts;
	const remove = (ctx: Context) => {
		const list = listOf(ctx);
		const i = list.indexOf(ctx);
		if (i !== -1) list.splice(i, 1);
	};
	const wrap = (handler: Handler): Handler =>
		function leanTracker(ctx: Context): Promise<unknown> {
			const own = (ctx.options as { tracking?: boolean | null }).tracking;
			if (!(own ?? tracking.enabled)) return handler(ctx);
			listOf(ctx).push(ctx);
			return handler(ctx).then(
				res => {
					remove(ctx);
					return res;
				},
				err => {
					remove(ctx);
					throw err;
				},
			);
		};
	return { ...inner, localAction: wrap, remoteAction: wrap, localEvent: wrap };
}

/**
 * Moleculer's internal middlewares in its own order (service-broker.js INTERNAL_MIDDLEWARES), the
 * action-hook, tracing, metrics, context-tracking, timeout and fallback ones replaced by the six above.
 * Registered after the user middlewares, as the broker would.
 */
export function callMiddlewares(): Array<Middleware | string> {
	return [
		LeanActionHook as unknown as Middleware,
		"Validator",
		"Bulkhead",
		"Cacher",
		LeanContextTracker as unknown as Middleware,
		"CircuitBreaker",
		LeanTimeout as unknown as Middleware,
		"Retry",
		LeanFallback as unknown as Middleware,
		"ErrorHandler",
		SampledTracing as unknown as Middleware,
		RequestMetrics as unknown as Middleware,
		"Debounce",
		"Throttle",
		// `moleculer-runner --hot` sets the option after this list is made: decided when the broker is.
		((broker: ServiceBroker) => (broker.options.hotReload ? builtIn("HotReload").call(broker, broker) : null)) as unknown as Middleware,
	];
}
