/** The database mixin on SQLite: migrations instead of sync, and a clear stop when unreachable. */
import fs from "node:fs";
import path from "node:path";
import { createNode, sqliteUrls, tempDir } from "../support/broker";
import { createSequelize } from "../../mixins/db.mixin";

let tmp: ReturnType<typeof tempDir>;
beforeEach(() => (tmp = tempDir()));
afterEach(() => tmp.remove());

it("applies each migration once, however often the service starts", async () => {
	const urls = sqliteUrls(tmp.dir, ["products"]);
	for (let i = 0; i < 2; i++) {
		const broker = createNode({ services: ["products"], databaseUrls: urls });
		await broker.start();
		await broker.stop();
	}
	const db = createSequelize(urls.products);
	const [rows] = await db.query("SELECT name FROM schema_migrations");
	const [indexes] = await db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'products'");
	await db.close();
	expect(rows).toEqual([{ name: "0001-create-products" }, { name: "0002-create-reservations" }, { name: "0003-search-indexes" }, { name: "0004-search-index" }, { name: "0005-search-column" }]);
	expect((indexes as Array<{ name: string }>).map(i => i.name)).toEqual(
		expect.arrayContaining(["products_sku_unique", "products_category_created_at", "products_created_at"]),
	);
});

it("keeps its data in its own file: one SQLite database per service", async () => {
	const urls = sqliteUrls(tmp.dir, ["users", "products"]);
	const broker = createNode({ services: ["users", "products"], databaseUrls: urls });
	await broker.start();
	await broker.stop();
	expect(fs.existsSync(path.join(tmp.dir, "users.sqlite"))).toBe(true);
	expect(fs.existsSync(path.join(tmp.dir, "products.sqlite"))).toBe(true);
	const products = createSequelize(urls.products);
	const [tables] = await products.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'users'");
	await products.close();
	expect(tables).toEqual([]);
});

it("refuses to start on a database it cannot reach, with one line naming it", async () => {
	const blocker = path.join(tmp.dir, "not-a-dir");
	fs.writeFileSync(blocker, "");
	const broker = createNode({ services: ["products"], databaseUrls: { products: `sqlite:${blocker}/products.sqlite` } });
	const error: Error = await broker.start().then(
		() => new Error("started"),
		(err: Error) => err,
	);
	await broker.stop().catch(() => undefined);
	expect(error.name).toBe("DatabaseUnreachableError");
	expect(error.message).toContain(`The products database at sqlite:${blocker}/products.sqlite cannot be reached`);
	expect(error.stack).not.toContain("\n");
});
