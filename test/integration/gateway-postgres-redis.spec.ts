/**
 * The gateway with users and products on PostgreSQL (a database per service) and the Redis
 * cacher: what a client sees through HTTP, and what PostgreSQL and Redis really hold.
 */
import type { ServiceBroker } from "moleculer";
import type Redis from "ioredis";
import { buildCacher } from "../../lib/cacher";
import { createNode, gatewayUrl, uniqueId } from "../support/broker";
import { http, login } from "../support/http";
import { Client } from "pg";
import { TestDatabases, pgQuery } from "../support/pg";
import { cachePrefix, cachedValue, deleteKeysWithPrefix, keysWithPrefix, redisClient } from "../support/redis";
import { SERVERS, requireServers } from "../support/servers";
import { waitFor } from "../support/wait";
import { SEARCH_COLUMN, searchSortKey } from "../../services/products/model";

const ADMIN = { email: "admin@it.local", password: "admin-password-1" };
const namespace = uniqueId("gw");
const prefix = cachePrefix(namespace);
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
let broker: ServiceBroker | undefined;
let redis: Redis | undefined;
let base: string;
let adminToken: string;

let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres", "redis");
	serversUp = true;
	await dbs.create();
	broker = createNode({
		services: ["api", "users", "products", "orders", "notifications"],
		namespace,
		databaseUrls: dbs.urls,
		cacher: buildCacher({ cacher: SERVERS.redis, cacheTtlSeconds: 300, namespace }),
		settings: { users: { admin: ADMIN } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	// The cacher is bypassed until Redis is ready: /ready says when it is.
	await waitFor("/ready to answer 200", async () => (await http(base, "GET", "/ready")).status === 200);
	redis = redisClient();
	adminToken = await login(base, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	await broker?.stop();
	redis?.disconnect();
	await deleteKeysWithPrefix(prefix);
	await dbs.drop();
});

const entityKey = (id: number) => `${prefix}products:entity:${id}`;

let skuSeq = 0;
async function createProduct(overrides: Record<string, unknown> = {}) {
	const body = { sku: `IT-${++skuSeq}`, name: "Kettle", description: "Stovetop", category: "kitchen", priceCents: 4999, stock: 10, ...overrides };
	const res = await http(base, "POST", "/api/products", { body, token: adminToken });
	expect(res.status).toBe(201);
	return res.body as { id: number; sku: string; name: string; priceCents: number; category: string };
}

describe("gateway on PostgreSQL and Redis", () => {
	it("reports the PostgreSQL databases and the Redis cacher up on /ready", async () => {
		const ready = await http(base, "GET", "/ready");
		expect(ready.status).toBe(200);
		expect(ready.body.checks).toEqual({
			"database:users": "up",
			"database:products": "up",
			"database:orders": "up",
			"database:notifications": "up",
			cacher: "up",
			"service:users": "up",
			"service:products": "up",
			"service:orders": "up",
			"service:notifications": "up",
		});
	});

	it("registers, logs in and answers /me with the user stored in the users database", async () => {
		const reg = await http(base, "POST", "/api/users/register", { body: { email: "Deniz@Example.com", password: "password-123", name: "Deniz" } });
		expect(reg.status).toBe(201);
		expect(reg.body.user).toEqual({ id: expect.any(Number), email: "deniz@example.com", name: "Deniz", role: "customer", createdAt: expect.any(String) });

		const token = await login(base, "deniz@example.com", "password-123");
		const me = await http(base, "GET", "/api/users/me", { token });
		expect(me.status).toBe(200);
		expect(me.body).toEqual(reg.body.user);

		const rows = await pgQuery(dbs.names.users, "SELECT email, role, password_hash FROM users WHERE id = $1", [reg.body.user.id]);
		expect(rows).toEqual([{ email: "deniz@example.com", role: "customer", password_hash: expect.stringMatching(/^scrypt\$/) }]);
		// The users service owns its database: products' database has no users table.
		expect(await pgQuery(dbs.names.products, "SELECT to_regclass('public.users') AS t")).toEqual([{ t: null }]);
	});

	it("refuses a second registration of the same email with 409 EMAIL_TAKEN", async () => {
		const body = { email: "twice@example.com", password: "password-123", name: "Twice" };
		expect((await http(base, "POST", "/api/users/register", { body })).status).toBe(201);
		const again = await http(base, "POST", "/api/users/register", { body: { ...body, email: "TWICE@example.com" } });
		expect(again.status).toBe(409);
		expect(again.body.type).toBe("EMAIL_TAKEN");
	});

	it("serves a product MISS then HIT through the gateway on PostgreSQL and Redis, the entry really in Redis", async () => {
		const created = await createProduct({ name: "Çaydanlık" });
		expect(await redis!.exists(entityKey(created.id))).toBe(0);

		const first = await http(base, "GET", `/api/products/${created.id}`);
		expect(first.status).toBe(200);
		expect(first.headers.get("x-cache")).toBe("MISS");
		expect(first.body).toEqual(created);

		// The MISS stored the product under the run's prefix in the real Redis.
		expect(await cachedValue(redis!, entityKey(created.id))).toEqual(created);
		expect(await keysWithPrefix(redis!, prefix)).toContain(entityKey(created.id));

		const second = await http(base, "GET", `/api/products/${created.id}`);
		expect(second.headers.get("x-cache")).toBe("HIT");
		expect(second.body).toEqual(created);
		expect(second.headers.get("content-type")).toBe("application/json; charset=utf-8");
		expect(second.text).toBe(first.text);
	});

	it("sends a hit on as Redis stores it, never parsed and written again; a call inside the cluster gets the object", async () => {
		const created = await createProduct({ name: "Cezve" });
		expect((await http(base, "GET", `/api/products/${created.id}`)).headers.get("x-cache")).toBe("MISS");
		// The same JSON, spaced as JSON.stringify never writes it: only a text sent on as stored
		// arrives spaced; parsed and written again it would come out compact.
		const spaced = JSON.stringify(await cachedValue(redis!, entityKey(created.id)), null, 1);
		await redis!.set(entityKey(created.id), spaced, "KEEPTTL");
		const hit = await http(base, "GET", `/api/products/${created.id}`);
		expect(hit.headers.get("x-cache")).toBe("HIT");
		expect(hit.headers.get("content-type")).toBe("application/json; charset=utf-8");
		expect(hit.text).toBe(spaced);
		expect(hit.body).toEqual(created);
		// products.get called by a service, not the gateway: the product as an object.
		expect(await broker!.call("products.get", { id: created.id })).toEqual(created);
	});

	it("serves the new value after a PATCH: the Redis entry is gone before the answer, the next GET is a MISS", async () => {
		const p = await createProduct();
		await http(base, "GET", `/api/products/${p.id}`);
		expect((await http(base, "GET", `/api/products/${p.id}`)).headers.get("x-cache")).toBe("HIT");

		const patched = await http(base, "PATCH", `/api/products/${p.id}`, { body: { priceCents: 5555, name: "Kettle v2" }, token: adminToken });
		expect(patched.status).toBe(200);
		expect(patched.body).toMatchObject({ id: p.id, priceCents: 5555, name: "Kettle v2" });
		expect(await redis!.exists(entityKey(p.id))).toBe(0);
		expect(await pgQuery(dbs.names.products, "SELECT price_cents, name FROM products WHERE id = $1", [p.id])).toEqual([{ price_cents: 5555, name: "Kettle v2" }]);

		const after = await http(base, "GET", `/api/products/${p.id}`);
		expect(after.headers.get("x-cache")).toBe("MISS");
		expect(after.body).toEqual(patched.body);
		const again = await http(base, "GET", `/api/products/${p.id}`);
		expect(again.headers.get("x-cache")).toBe("HIT");
		expect(again.body).toEqual(patched.body);
	});

	it("caches a list and invalidates it after a create, an update and a delete", async () => {
		const list = () => http(base, "GET", "/api/products?category=lists&sort=priceCents");
		const a = await createProduct({ category: "lists", priceCents: 100 });

		const first = await list();
		expect(first.headers.get("x-cache")).toBe("MISS");
		expect(first.body).toMatchObject({ total: 1, page: 1, pageSize: 20, totalPages: 1 });
		const cached = await list();
		expect(cached.headers.get("x-cache")).toBe("HIT");
		expect(cached.body).toEqual(first.body);

		const b = await createProduct({ category: "lists", priceCents: 200 });
		const afterCreate = await list();
		expect(afterCreate.headers.get("x-cache")).toBe("MISS");
		expect(afterCreate.body.rows.map((r: { id: number }) => r.id)).toEqual([a.id, b.id]);
		expect((await list()).headers.get("x-cache")).toBe("HIT");

		expect((await http(base, "PATCH", `/api/products/${a.id}`, { body: { priceCents: 300 }, token: adminToken })).status).toBe(200);
		const afterUpdate = await list();
		expect(afterUpdate.headers.get("x-cache")).toBe("MISS");
		expect(afterUpdate.body.rows.map((r: { id: number; priceCents: number }) => [r.id, r.priceCents])).toEqual([
			[b.id, 200],
			[a.id, 300],
		]);
		expect((await list()).headers.get("x-cache")).toBe("HIT");

		expect((await http(base, "DELETE", `/api/products/${b.id}`, { token: adminToken })).status).toBe(204);
		const afterDelete = await list();
		expect(afterDelete.headers.get("x-cache")).toBe("MISS");
		expect(afterDelete.body).toMatchObject({ total: 1, rows: [expect.objectContaining({ id: a.id })] });
		expect((await http(base, "GET", `/api/products/${b.id}`)).status).toBe(404);
	});

	it("finds a product by a substring of its name or description through one trigram index, not a scan", async () => {
		const p = await createProduct({ name: "Bakır Cezve Özel", description: "Dövme bakır" });
		const res = await http(base, "GET", `/api/products?q=${encodeURIComponent("CEZVE ÖZ")}`);
		expect(res.status).toBe(200);
		expect(res.body).toMatchObject({ total: 1, rows: [expect.objectContaining({ id: p.id })] });
		expect((await http(base, "GET", `/api/products?q=${encodeURIComponent("dövme BAK")}`)).body).toMatchObject({ total: 1, rows: [expect.objectContaining({ id: p.id })] });
		// Name and description are searched as one text, never across the two.
		for (const q of ["özel dövme", "özel\u001fdövme"]) {
			const across = await http(base, "GET", `/api/products?q=${encodeURIComponent(q)}`);
			expect(across.status).toBe(200);
			expect(across.body).toMatchObject({ total: 0, rows: [] });
		}
		const indexes = (await pgQuery<{ indexname: string }>(dbs.names.products, "SELECT indexname FROM pg_indexes WHERE tablename = 'products'")).map(r => r.indexname);
		expect(indexes).toContain("products_search_text_trgm");
		expect(indexes).not.toEqual(expect.arrayContaining(["products_name_trgm"]));
		expect(indexes).not.toEqual(expect.arrayContaining(["products_search_trgm"]));
		// The planner may scan a table this small; with scans priced out it must be able to use the
		// index for the service's search column.
		const client = new Client({ connectionString: dbs.urls.products });
		await client.connect();
		try {
			await client.query("SET enable_seqscan = off");
			const plan = await client.query(`EXPLAIN SELECT id FROM products WHERE ${SEARCH_COLUMN} LIKE $1 ESCAPE '\\'`, ["%cezve öz%"]);
			expect(plan.rows.map(r => r["QUERY PLAN"]).join("\n")).toContain("products_search_text_trgm");
			// A search's page, sorted by the service's search sort key, is never a walk along the
			// created_at index (a walk costs the rows it passes, not the matches).
			const page = await client.query(`EXPLAIN SELECT id FROM products WHERE ${SEARCH_COLUMN} LIKE $1 ESCAPE '\\' ORDER BY ${searchSortKey("created_at")} DESC, id DESC LIMIT 20`, ["%cezve öz%"]);
			const pagePlan = page.rows.map(r => r["QUERY PLAN"]).join("\n");
			expect(pagePlan).toContain("products_search_text_trgm");
			expect(pagePlan).not.toContain("products_created_at");
		} finally {
			await client.end();
		}
	});

	it("answers a duplicate sku 409 SKU_TAKEN on create and on PATCH, and keeps one row", async () => {
		const p = await createProduct({ sku: "DUP-1" });
		const dup = await http(base, "POST", "/api/products", { body: { sku: "DUP-1", name: "Other", category: "x", priceCents: 1 }, token: adminToken });
		expect(dup.status).toBe(409);
		expect(dup.body).toMatchObject({ code: 409, type: "SKU_TAKEN" });

		const other = await createProduct({ sku: "DUP-2" });
		const patch = await http(base, "PATCH", `/api/products/${other.id}`, { body: { sku: "DUP-1" }, token: adminToken });
		expect(patch.status).toBe(409);
		expect(patch.body.type).toBe("SKU_TAKEN");

		expect(await pgQuery(dbs.names.products, "SELECT id FROM products WHERE sku = 'DUP-1'")).toEqual([{ id: p.id }]);
		expect((await http(base, "GET", `/api/products/${other.id}`)).body.sku).toBe("DUP-2");
	});

	it("lets only the seeded admin write the catalog", async () => {
		const reg = await http(base, "POST", "/api/users/register", { body: { email: "customer@example.com", password: "password-123", name: "C" } });
		const body = { sku: "NOPE-1", name: "No", category: "x", priceCents: 1 };
		expect((await http(base, "POST", "/api/products", { body })).status).toBe(401);
		expect((await http(base, "POST", "/api/products", { body, token: reg.body.token })).status).toBe(403);
		expect(await pgQuery(dbs.names.products, "SELECT id FROM products WHERE sku = 'NOPE-1'")).toEqual([]);
	});
});
