/**
 * The distributed mode in one process: the gateway, users and products as three ServiceBrokers
 * that meet only over RabbitMQ (Moleculer's AMQP transporter, options of moleculer.config.ts), on
 * PostgreSQL and a shared Redis cacher. Everything a client does goes through the gateway's HTTP.
 */
import type { ServiceBroker } from "moleculer";
import type Redis from "ioredis";
import { buildCacher } from "../../lib/cacher";
import { amqpTransporter, deleteAmqpResources, queueExists, recordAmqpResources, type AmqpResources } from "../support/amqp";
import { createNode, gatewayUrl, uniqueId } from "../support/broker";
import { http, login } from "../support/http";
import { TestDatabases, pgQuery } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix, redisClient } from "../support/redis";
import { SERVERS, requireServers } from "../support/servers";
import { waitFor } from "../support/wait";
import { channelsAmqpResources, deleteChannelsAmqpResources } from "../support/amqp";
import { CONSUMER_GROUPS } from "../../lib/events";

const ADMIN = { email: "admin@amqp.local", password: "admin-password-1" };
const namespace = uniqueId("amqp");
const prefix = cachePrefix(namespace);
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
const amqpResources: AmqpResources = { queues: new Set(), exchanges: new Set() };
type NodeName = "api" | "users" | "products" | "orders" | "notifications";
const brokers: Record<NodeName, ServiceBroker | undefined> = { api: undefined, users: undefined, products: undefined, orders: undefined, notifications: undefined };
let redis: Redis | undefined;
let base: string;

function node(service: NodeName): ServiceBroker {
	const broker = createNode({
		services: [service],
		namespace,
		nodeID: `${namespace}-${service}`,
		transporter: amqpTransporter(),
		cacher: buildCacher({ cacher: SERVERS.redis, cacheTtlSeconds: 300, namespace }),
		databaseUrls: dbs.urls,
		settings: { users: { admin: ADMIN } },
	});
	recordAmqpResources(broker, amqpResources);
	return broker;
}

let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	serversUp = true;
	await dbs.create();
	brokers.users = node("users");
	brokers.products = node("products");
	brokers.orders = node("orders");
	brokers.notifications = node("notifications");
	brokers.api = node("api");
	await Promise.all(Object.values(brokers).map(b => b!.start()));
	await brokers.api.waitForServices(["users", "products", "orders", "notifications"], 30_000);
	base = gatewayUrl(brokers.api);
	await waitFor("/ready to answer 200", async () => (await http(base, "GET", "/ready")).status === 200);
	redis = redisClient();
}, 60_000);

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	// The gateway first, so that no request is in flight towards a stopping service.
	await brokers.api?.stop();
	await Promise.all([brokers.users?.stop(), brokers.products?.stop(), brokers.orders?.stop(), brokers.notifications?.stop()]);
	redis?.disconnect();
	await deleteAmqpResources(amqpResources, namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(prefix);
	await dbs.drop();
});

describe("gateway, users and products as three brokers over RabbitMQ", () => {
	it("runs each service on its own node, reached only through RabbitMQ", async () => {
		const api = brokers.api!;
		expect(api.getLocalService("users")).toBeFalsy();
		expect(api.getLocalService("products")).toBeFalsy();
		const nodesOf = (name: string) =>
			(api.registry.getServiceList({ onlyAvailable: true }) as Array<{ name: string; nodeID: string }>)
				.filter(s => s.name === name)
				.map(s => s.nodeID);
		expect(nodesOf("users")).toEqual([`${namespace}-users`]);
		expect(nodesOf("products")).toEqual([`${namespace}-products`]);
		// The calls travel through this run's queues in RabbitMQ.
		expect(await queueExists(`MOL-${namespace}.REQ.${namespace}-products`)).toBe(true);

		const ready = await http(base, "GET", "/ready");
		expect(ready.status).toBe(200);
		expect(ready.body.checks).toEqual({
			cacher: "up",
			transporter: "up",
			events: "up",
			"service:users": "up",
			"service:products": "up",
			"service:orders": "up",
			"service:notifications": "up",
		});
	});

	it("registers, logs in and answers /me through the gateway across nodes", async () => {
		const reg = await http(base, "POST", "/api/users/register", { body: { email: "Ece@Example.com", password: "password-123", name: "Ece" } });
		expect(reg.status).toBe(201);
		expect(reg.body.user).toMatchObject({ email: "ece@example.com", role: "customer" });

		const token = await login(base, "ece@example.com", "password-123");
		const me = await http(base, "GET", "/api/users/me", { token });
		expect(me.status).toBe(200);
		expect(me.body).toEqual(reg.body.user);

		const bad = await http(base, "POST", "/api/users/login", { body: { email: "ece@example.com", password: "wrong-password" } });
		expect(bad.status).toBe(401);
		expect(bad.body.type).toBe("UNAUTHORIZED");
	});

	it("creates, serves MISS then HIT, patches and deletes a product through the gateway across nodes", async () => {
		const token = await login(base, ADMIN.email, ADMIN.password);
		const created = await http(base, "POST", "/api/products", {
			token,
			body: { sku: "AMQP-1", name: "Tepsi", category: "kitchen", priceCents: 3500, stock: 2 },
		});
		expect(created.status).toBe(201);
		const id: number = created.body.id;

		const first = await http(base, "GET", `/api/products/${id}`);
		expect(first.status).toBe(200);
		expect(first.headers.get("x-cache")).toBe("MISS");
		expect(first.body).toEqual(created.body);
		expect(await redis!.exists(`${prefix}products:entity:${id}`)).toBe(1);
		const second = await http(base, "GET", `/api/products/${id}`);
		expect(second.headers.get("x-cache")).toBe("HIT");
		expect(second.body).toEqual(created.body);

		const patched = await http(base, "PATCH", `/api/products/${id}`, { token, body: { priceCents: 3000 } });
		expect(patched.status).toBe(200);
		expect(patched.body.priceCents).toBe(3000);
		const after = await http(base, "GET", `/api/products/${id}`);
		expect(after.headers.get("x-cache")).toBe("MISS");
		expect(after.body).toEqual(patched.body);

		const dup = await http(base, "POST", "/api/products", { token, body: { sku: "AMQP-1", name: "x", category: "x", priceCents: 1 } });
		expect(dup.status).toBe(409);
		expect(dup.body.type).toBe("SKU_TAKEN");

		const del = await http(base, "DELETE", `/api/products/${id}`, { token });
		expect(del.status).toBe(204);
		expect((await http(base, "GET", `/api/products/${id}`)).status).toBe(404);
		expect(await pgQuery(dbs.names.products, "SELECT id FROM products WHERE id = $1", [id])).toEqual([]);
	});

	it("refuses a customer's write with 403, the token checked by the users node", async () => {
		const reg = await http(base, "POST", "/api/users/register", { body: { email: "cust@example.com", password: "password-123", name: "C" } });
		const res = await http(base, "POST", "/api/products", { token: reg.body.token, body: { sku: "AMQP-X", name: "x", category: "x", priceCents: 1 } });
		expect(res.status).toBe(403);
		expect(res.body.type).toBe("FORBIDDEN");
	});
});
