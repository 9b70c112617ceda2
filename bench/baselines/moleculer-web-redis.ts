/**
 * Baseline: the framework's own floor. A bare moleculer-web route GET /api/products/:id to a bare
 * `products.get` action reading through the same Redis cacher as ours (lib/redis-cacher SafeRedisCacher,
 * JSON serializer): cacher.get, and on a miss the product built in memory and cacher.set (what
 * mixins/cache.mixin does, without its lock). No middlewares, no metrics, no logs.
 *
 * One process by default. With TRANSPORTER (amqp://…) and ROLE=gateway or ROLE=products it is one
 * half of the same split over the AMQP transporter, tuned as moleculer.config.ts tunes ours
 * (prefetch 100, Nagle off): the two-process floor of the distributed read.
 * Prints "ready" (the gateway once it sees products). Env: PORT, REDIS_URL, NAMESPACE, TRANSPORTER, ROLE.
 */
import { ServiceBroker, type Context } from "moleculer";
import ApiGateway from "moleculer-web";
import { SafeRedisCacher } from "../../lib/redis-cacher";
import { product } from "../common";

const namespace = process.env.NAMESPACE!;
const role = process.env.ROLE ?? "both";
const amqpUrl = process.env.TRANSPORTER;
const cacher = new SafeRedisCacher({ url: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", ttl: 3600, prefix: `carsi-${namespace}` });
const broker = new ServiceBroker({
	namespace,
	nodeID: `bench-${role}-${process.pid}`,
	logger: false,
	serializer: "JSON",
	metrics: { enabled: false },
	cacher,
	transporter: amqpUrl ? { type: "AMQP", options: { url: amqpUrl, prefetch: 100, socketOptions: { noDelay: true }, autoDeleteQueues: 60_000 } } : undefined,
});

if (role !== "gateway")
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
					await cacher.set(key, value, 3600);
					return value;
				},
			},
		},
	});

if (role !== "products")
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

broker
	.start()
	.then(() => (role === "gateway" ? broker.waitForServices(["products"], 30_000) : undefined))
	.then(
		() => console.log("ready"),
		err => {
			console.error(err);
			process.exit(1);
		},
	);
process.on("SIGTERM", () => broker.stop().then(() => process.exit(0)));
