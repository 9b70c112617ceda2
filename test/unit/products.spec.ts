/**
 * products on a broker of its own (SQLite, Memory cacher): the catalog's rules and its cache.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, sqliteUrls, tempDir } from "../support/broker";
import { createSequelize } from "../../mixins/db.mixin";

let broker: ServiceBroker;
let tmp: ReturnType<typeof tempDir>;
const base = { name: "Kettle", category: "kitchen", priceCents: 12900 };

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({ services: ["products"], databaseUrls: sqliteUrls(tmp.dir, ["products"]) });
	await broker.start();
});
afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

async function call<T = any>(action: string, params: unknown): Promise<{ result: T; cache?: string }> {
	const meta: { $cache?: string } = {};
	const result = await broker.call<T, unknown>(`products.${action}`, params, { meta });
	return { result, cache: meta.$cache };
}

it("creates with defaults: TRY, no stock, empty description", async () => {
	const { result } = await call("create", { ...base, sku: "K-1" });
	expect(result).toEqual({
		id: expect.any(Number),
		sku: "K-1",
		...base,
		description: "",
		currency: "TRY",
		stock: 0,
		createdAt: expect.any(String),
		updatedAt: expect.any(String),
	});
	expect(new Date(result.createdAt).toISOString()).toBe(result.createdAt);
});

it("keys list entries by the question, not by how it was written", async () => {
	await call("create", { ...base, sku: "K-2" });
	const a = await call("list", { category: "kitchen", pageSize: "5", page: "1" });
	const b = await call("list", { page: 1, pageSize: 5, category: "kitchen", sort: "-createdAt" });
	expect(a.cache).toBe("MISS");
	expect(b.cache).toBe("HIT");
	expect(b.result).toEqual(a.result);
});

it("serves a changed stock at once after an update", async () => {
	const { result: p } = await call("create", { ...base, sku: "K-3", stock: 4 });
	await call("get", { id: p.id });
	expect((await call("get", { id: p.id })).cache).toBe("HIT");
	await call("update", { id: p.id, stock: 0 });
	const after = await call("get", { id: p.id });
	expect(after).toMatchObject({ cache: "MISS", result: { stock: 0 } });
});

it("changes nothing when an update is refused", async () => {
	const { result: p } = await call("create", { ...base, sku: "K-4", stock: 4 });
	await expect(call("update", { id: p.id, stock: -5, name: "Renamed" })).rejects.toMatchObject({ code: 422 });
	await expect(call("update", { id: p.id, name: "Renamed", isAdmin: true })).rejects.toMatchObject({ code: 422 });
	expect((await call("get", { id: p.id })).result).toMatchObject({ stock: 4, name: "Kettle" });
});

it("refuses negative stock in the database too, not only in validation", async () => {
	const { result: p } = await call("create", { ...base, sku: "K-5", stock: 1 });
	const db = createSequelize(sqliteUrls(tmp.dir, ["products"]).products);
	await expect(db.query(`UPDATE products SET stock = -1 WHERE id = ${Number(p.id)}`)).rejects.toHaveProperty("original.code", "SQLITE_CONSTRAINT");
	await db.close();
});

it("exposes none of moleculer-db's generic actions", () => {
	const names = broker.registry.getActionList({}).map((a: { name: string }) => a.name).filter((n: string) => n.startsWith("products."));
	expect(names.sort()).toEqual([
		"products.cacheInvalidate",
		"products.confirm",
		"products.create",
		"products.get",
		"products.list",
		"products.release",
		"products.remove",
		"products.reserve",
		"products.update",
	]);
});
