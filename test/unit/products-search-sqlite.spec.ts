/**
 * The catalog search on SQLite, which keeps no sample of a column: the service draws one
 * (services/products/search.ts), reads a text it expects in most rows as its page alone (a walk
 * along the sort index meets a page of matches soon) and any other as one statement for the page
 * and its total; both answer what a substring match over name or description answers.
 */
import type { ServiceBroker } from "moleculer";
import type { DbMethods } from "../../mixins/db.mixin";
import type { SearchStats } from "../../services/products/search";
import { createNode, sqliteUrls, tempDir } from "../support/broker";

let broker: ServiceBroker;
let tmp: ReturnType<typeof tempDir>;
const statements: string[] = [];
const names: string[] = [];

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({ services: ["products"], databaseUrls: sqliteUrls(tmp.dir, ["products"]), cacher: false as never, settings: { products: { reservationSweepMs: 0 } } });
	await broker.start();
	for (let i = 1; i <= 40; i++) names.push(`Bench product ${i}`);
	names.push("Widget");
	for (const [i, name] of names.entries()) await broker.call("products.create", { sku: `S-${i}`, name, category: "tea", priceCents: 100 + i });
	const svc = broker.getLocalService("products") as unknown as { searchStats: SearchStats; sql: DbMethods["sql"] };
	await svc.searchStats.refresh();
	const sql = svc.sql;
	svc.sql = ((text: string, ...rest: never[]) => {
		statements.push(text);
		return sql(text, ...rest);
	}) as DbMethods["sql"];
});
afterAll(async () => {
	await broker?.stop();
	tmp?.remove();
});

async function search(q: string, pageSize: number, page = 1) {
	statements.length = 0;
	const answer = await broker.call<{ rows: Array<{ name: string; priceCents: number }>; total: number }, object>("products.list", { q, pageSize, page, sort: "priceCents" });
	return { names: answer.rows.map(r => r.name), total: answer.total, statements: [...statements] };
}

/** The names a substring match finds, in the list's order (price, as created). */
const expected = (q: string) => names.filter(n => n.toLowerCase().includes(q.toLowerCase()));

describe("catalog search on SQLite", () => {
	it("reads a text the sample expects in most rows as its page alone, and counts a full page", async () => {
		const r = await search("bench PRODUCT", 5, 2);
		expect(r).toMatchObject({ names: expected("bench product").slice(5, 10), total: 40 });
		expect(r.statements).toHaveLength(2);
		expect(r.statements[0]).not.toContain("WITH");
		expect(r.statements[1]).toMatch(/^SELECT count\(\*\)/);
	});

	it("reads any other text once for its page and its total, a page past the end counted on its own", async () => {
		// "product 1": 1 and 10-19, 11 of 41 rows.
		const r = await search("product 1", 5);
		expect(r).toMatchObject({ names: expected("product 1").slice(0, 5), total: 11 });
		expect(r.statements).toHaveLength(1);
		expect(r.statements[0]).toContain("WITH found AS MATERIALIZED");
		const rare = await search("widget", 5);
		expect(rare).toMatchObject({ names: ["Widget"], total: 1 });
		expect(rare.statements).toHaveLength(1);
		const past = await search("product 1", 5, 4);
		expect(past).toMatchObject({ names: [], total: 11 });
		expect(past.statements).toHaveLength(2);
	});
});
