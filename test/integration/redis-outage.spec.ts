/**
 * Redis taken away mid-run (a TCP proxy between the products broker's cacher and Redis, cut and
 * restored): reads and writes go on from PostgreSQL, /ready says the cacher is down, and once
 * Redis is back no entry from before the outage is ever served (the cacher flushes its prefix
 * before it serves again).
 */
import type { ServiceBroker } from "moleculer";
import type Redis from "ioredis";
import { SafeRedisCacher } from "../../lib/redis-cacher";
import { createNode, gatewayUrl, uniqueId } from "../support/broker";
import { http, login } from "../support/http";
import { TestDatabases, pgQuery } from "../support/pg";
import { cachePrefix, cachedValue, deleteKeysWithPrefix, keysWithPrefix, redisClient } from "../support/redis";
import { SERVERS, requireServers } from "../support/servers";
import { TcpProxy } from "../support/tcp-proxy";
import { waitFor } from "../support/wait";

const ADMIN = { email: "admin@outage.local", password: "admin-password-1" };
const namespace = uniqueId("out");
const prefix = cachePrefix(namespace);
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
let proxy: TcpProxy | undefined;
let cacher: SafeRedisCacher;
let broker: ServiceBroker | undefined;
let redis: Redis | undefined;
let base: string;
let adminToken: string;

let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres", "redis");
	serversUp = true;
	await dbs.create();
	const target = new URL(SERVERS.redis);
	proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 6379) });
	cacher = new SafeRedisCacher({ url: proxy.url("redis"), ttl: 300, prefix: `carsi-${namespace}` });
	broker = createNode({
		services: ["api", "users", "products", "orders", "notifications"],
		namespace,
		databaseUrls: dbs.urls,
		cacher,
		settings: { users: { admin: ADMIN } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	await waitFor("/ready to answer 200", async () => (await http(base, "GET", "/ready")).status === 200);
	redis = redisClient(); // straight to Redis, never through the proxy
	adminToken = await login(base, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	proxy?.restore();
	await broker?.stop();
	await proxy?.close();
	redis?.disconnect();
	await deleteKeysWithPrefix(prefix);
	await dbs.drop();
});

const entityKey = (id: number) => `${prefix}products:entity:${id}`;
const ready = () => http(base, "GET", "/ready");

async function cutAndWaitDown(): Promise<void> {
	proxy!.cut();
	await waitFor("the cacher to notice Redis is gone", () => !cacher.available);
}

async function restoreAndWaitUp(): Promise<void> {
	proxy!.restore();
	await waitFor("/ready to report the cacher up again", async () => {
		const res = await ready();
		return res.status === 200 && res.body.checks.cacher === "up";
	});
}

describe("products with Redis cut and restored", () => {
	it("reports the cacher down with 503 on /ready while Redis is cut, and up with 200 after", async () => {
		expect((await ready()).body.checks.cacher).toBe("up");
		await cutAndWaitDown();
		const down = await ready();
		expect(down.status).toBe(503);
		expect(down.body.checks).toMatchObject({ cacher: "down", "database:products": "up", "database:users": "up" });

		await restoreAndWaitUp();
		const up = await ready();
		expect(up.status).toBe(200);
		expect(cacher.available).toBe(true);
	});

	it("serves reads and writes from PostgreSQL during the outage and never the pre-outage entry after it", async () => {
		const create = await http(base, "POST", "/api/products", {
			token: adminToken,
			body: { sku: "OUT-1", name: "Semaver", category: "outage", priceCents: 10000, stock: 4 },
		});
		expect(create.status).toBe(201);
		const id: number = create.body.id;
		const list = () => http(base, "GET", "/api/products?category=outage");

		// Before the outage: the entity and a list are cached in Redis with the old values.
		expect((await http(base, "GET", `/api/products/${id}`)).headers.get("x-cache")).toBe("MISS");
		expect((await http(base, "GET", `/api/products/${id}`)).headers.get("x-cache")).toBe("HIT");
		expect((await list()).body.total).toBe(1);
		expect((await list()).headers.get("x-cache")).toBe("HIT");
		expect((await cachedValue<{ priceCents: number }>(redis!, entityKey(id)))?.priceCents).toBe(10000);

		await cutAndWaitDown();

		for (let i = 0; i < 5; i++) {
			const res = await http(base, "GET", `/api/products/${id}`);
			expect(res.status).toBe(200);
			expect(res.headers.get("x-cache")).toBe("MISS");
			expect(res.body.priceCents).toBe(10000);
		}

		const patched = await http(base, "PATCH", `/api/products/${id}`, { token: adminToken, body: { priceCents: 7500, name: "Semaver (indirim)" } });
		expect(patched.status).toBe(200);
		expect(patched.body).toMatchObject({ id, priceCents: 7500, name: "Semaver (indirim)" });
		expect(await pgQuery(dbs.names.products, "SELECT price_cents, name FROM products WHERE id = $1", [id])).toEqual([
			{ price_cents: 7500, name: "Semaver (indirim)" },
		]);
		const added = await http(base, "POST", "/api/products", {
			token: adminToken,
			body: { sku: "OUT-2", name: "Fincan", category: "outage", priceCents: 900 },
		});
		expect(added.status).toBe(201);

		// Reads during the outage already see the write (from PostgreSQL)...
		const during = await http(base, "GET", `/api/products/${id}`);
		expect(during.status).toBe(200);
		expect(during.body.priceCents).toBe(7500);
		expect((await list()).body.total).toBe(2);
		// ...while Redis itself still holds the stale entry the failed delete could not remove.
		expect((await cachedValue<{ priceCents: number }>(redis!, entityKey(id)))?.priceCents).toBe(10000);

		await restoreAndWaitUp();

		// Back in service only after the flush: nothing of the prefix survived the outage.
		expect(await keysWithPrefix(redis!, prefix)).toEqual([]);
		const after = await http(base, "GET", `/api/products/${id}`);
		expect(after.status).toBe(200);
		expect(after.headers.get("x-cache")).toBe("MISS");
		expect(after.body).toEqual(patched.body);
		const hit = await http(base, "GET", `/api/products/${id}`);
		expect(hit.headers.get("x-cache")).toBe("HIT");
		expect(hit.body).toEqual(patched.body);
		expect((await cachedValue<{ priceCents: number }>(redis!, entityKey(id)))?.priceCents).toBe(7500);

		const listAfter = await list();
		expect(listAfter.body.total).toBe(2);
		expect(listAfter.body.rows.map((r: { sku: string }) => r.sku).sort()).toEqual(["OUT-1", "OUT-2"]);
	});
});
