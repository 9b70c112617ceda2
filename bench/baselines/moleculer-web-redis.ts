/**
 * Baseline: the framework's own floor. A bare moleculer-web route GET /api/products/:id to a bare
 * `products.get` action reading through the same Redis cacher as ours (lib/redis-cacher SafeRedisCacher,
 * JSON serializer): cacher.get, and on a miss the product built in memory and cacher.set (what
 * mixins/cache.mixin does, without its lock). Not the action's `cache:` option: Moleculer's cacher
 * middleware skips a cacher whose `connected` is false, and SafeRedisCacher replaces the base class's
 * "ready" listener that sets it, so `cache:` would never reach Redis. No transporter, no middlewares,
 * no logs. Prints "ready". Env: PORT, REDIS_URL, NAMESPACE.
 */
import { ServiceBroker, type Context } from "moleculer";
import ApiGateway from "moleculer-web";
import { SafeRedisCacher } from "../../lib/redis-cacher";
import { product } from "../common";

const namespace = process.env.NAMESPACE!;
const cacher = new SafeRedisCacher({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", ttl: 300, prefix: `carsi-${namespace}` });
const broker = new ServiceBroker({
	namespace,
	logger: false,
	serializer: "JSON",
	metrics: { enabled: false },
	cacher,
});

broker.createService({
	name: "products",
	actions: {
		get: {
			params: { id: { type: "number", integer: true, positive: true, convert: true } },
			async handler(ctx: Context<{ id: number }>) {
				const key = `products:entity:${ctx.params.id}`;
				const cached = await cacher.get(key);
				if (cached != null) return cached;
				const value = product(ctx.params.id);
				await cacher.set(key, value, 300);
				return value;
			},
		},
	},
});

broker.createService({
	name: "api",
	mixins: [ApiGateway],
	settings: {
		port: Number(process.env.PORT),
		ip: "127.0.0.1",
		routes: [{ path: "/api", mappingPolicy: "restrict", aliases: { "GET products/:id": "products.get" } }],
		log4XXResponses: false,
	},
});

broker.start().then(
	() => console.log("ready"),
	err => {
		console.error(err);
		process.exit(1);
	},
);
process.on("SIGTERM", () => broker.stop().then(() => process.exit(0)));
