/**
 * CPU per call through the broker's per-call middlewares, no HTTP, no I/O: `api.rest` calling
 * `products.get` (the two calls of a cached read), 50 at a time, with Moleculer's own middlewares
 * and with lib/call-middlewares, metrics and tracing on (sampling as the default: 20 traces/s), with
 * moleculer.config.ts's request timeout, context tracking and retries, and db.mixin's error hook.
 * REQUEST_ID=1 adds lib/logging's request-id scope, as moleculer.config.ts does.
 *
 *   npx ts-node --transpile-only bench/call-cpu.ts
 */
import { ServiceBroker, type BrokerOptions, type Context } from "moleculer";
import { callMiddlewares } from "../lib/call-middlewares";
import { requestIdMiddleware } from "../lib/logging";

async function cpuPerCall(ours: boolean, n: number): Promise<number> {
	const opts: BrokerOptions = {
		logger: false,
		metrics: { enabled: true },
		tracing: { enabled: true, sampling: { tracesPerSecond: 20 }, tags: { action: { params: false, meta: false, response: false } }, exporter: [] },
		// As moleculer.config.ts: every call has a timeout, is tracked (graceful stop) and is retried.
		requestTimeout: 10_000,
		tracking: { enabled: true, shutdownTimeout: 10_000 },
		retryPolicy: { enabled: true, retries: 3, delay: 100 },
		internalMiddlewares: !ours,
		middlewares: [...(process.env.REQUEST_ID ? [requestIdMiddleware("info")] : []), ...(ours ? callMiddlewares() : [])],
	};
	const broker = new ServiceBroker(opts);
	broker.createService({
		name: "products",
		// As mixins/db.mixin.ts on every action of a service with a database: an error hook.
		hooks: { error: { "*": (_ctx: Context, err: Error) => Promise.reject(err) } },
		actions: { get: { params: { id: "number" }, handler: (ctx: Context<{ id: number }>) => ({ id: ctx.params.id }) } },
	});
	broker.createService({ name: "api", actions: { rest: { handler: (ctx: Context<{ id: number }>) => ctx.call("products.get", { id: ctx.params.id }) } } });
	await broker.start();
	const run = async (count: number) => {
		for (let i = 0; i < count; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => broker.call("api.rest", { id: i + j })));
	};
	await run(n / 4);
	const c0 = process.cpuUsage();
	await run(n);
	const c = process.cpuUsage(c0);
	await broker.stop();
	return (c.user + c.system) / n;
}

async function main(): Promise<void> {
	const n = Number(process.env.N ?? 200_000);
	for (let pass = 1; pass <= 2; pass++)
		for (const ours of [false, true])
			console.log(`pass ${pass}, ${ours ? "lib/call-middlewares" : "Moleculer's middlewares"}: ${(await cpuPerCall(ours, n)).toFixed(2)} µs CPU per api.rest → products.get`);
}

void main();
