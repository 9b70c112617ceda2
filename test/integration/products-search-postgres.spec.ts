/**
 * The catalog search on PostgreSQL over a catalog whose names share words: the index is asked for
 * a rare word of the text when the column's statistics know one (services/products/search.ts),
 * and the answer is the same as a substring match of the whole text over name or description.
 */
import type { ServiceBroker } from "moleculer";
import { Client } from "pg";
import type { DbMethods } from "../../mixins/db.mixin";
import type { SqlOptions } from "../../lib/sql";
import { createNode } from "../support/broker";
import { TestDatabases, pgQuery } from "../support/pg";
import { requireServers } from "../support/servers";
import type { SearchStats } from "../../services/products/search";

const dbs = new TestDatabases(["products"] as const);
let broker: ServiceBroker;
let products: Array<{ id: number; name: string; description: string }>;
const statements: Array<{ text: string; prepared: boolean }> = [];

const SIZE = 3000;

beforeAll(async () => {
	await requireServers("postgres");
	await dbs.create();
	broker = createNode({ services: ["products"], databaseUrls: dbs.urls, settings: { products: { reservationSweepMs: 0 } } });
	await broker.start();
	// Names that all share "Bench product", as the bench's; one more whose number alone matches.
	await pgQuery(
		dbs.names.products,
		`INSERT INTO products (sku, name, description, category, price_cents, currency, stock, created_at, updated_at)
		 SELECT 'S-' || i, 'Bench product ' || i, 'A product of the search test, number ' || i || '.', 'tea', 100, 'TRY', 1, now(), now()
		 FROM generate_series(1, $1::int) AS i
		 UNION ALL SELECT 'W-1', 'Widget 1234', 'Not a bench product at all', 'tea', 100, 'TRY', 1, now(), now()
		 UNION ALL SELECT 'W-2', 'Kettle', 'Holds product 2345 inside its description', 'tea', 100, 'TRY', 1, now(), now()`,
		[SIZE],
	);
	await pgQuery(dbs.names.products, "ANALYZE products");
	products = await pgQuery(dbs.names.products, "SELECT id, name, description FROM products ORDER BY id");
	const svc = broker.getLocalService("products") as unknown as { searchStats: SearchStats; sql: DbMethods["sql"] };
	await svc.searchStats.refresh();
	// The statements the service sends through lib/sql, their values written in, and whether each
	// ran prepared (a search must not: its plan has to see the pattern).
	const sql = svc.sql;
	svc.sql = ((text: string, params: unknown[] = [], t?: never, opts?: SqlOptions) => {
		const literal = (v: unknown) => (typeof v === "number" ? String(v) : `'${String(v).replace(/'/g, "''")}'`);
		statements.push({ text: text.replace(/\$(\d+)/g, (_, n: string) => literal(params[Number(n) - 1])), prepared: opts?.prepared !== false });
		return sql(text, params, t, opts);
	}) as DbMethods["sql"];
});
afterAll(async () => {
	await broker?.stop();
	await dbs.drop();
});

/** The ids a substring match of `q` over name or description (each alone) finds, case folded. */
const expected = (q: string) =>
	products
		.filter(p => p.name.toLowerCase().includes(q.toLowerCase()) || p.description.toLowerCase().includes(q.toLowerCase()))
		.map(p => p.id)
		.sort((a, b) => a - b);

async function search(q: string, pageSize = 100, page = 1) {
	statements.length = 0;
	const answer = await broker.call<{ rows: Array<{ id: number }>; total: number }, object>("products.list", { q, pageSize, page, sort: "createdAt" });
	const sent = statements.filter(s => /FROM products/.test(s.text));
	expect(sent.length).toBeGreaterThan(0);
	expect(sent.filter(s => s.prepared)).toEqual([]);
	return { ids: answer.rows.map(r => r.id).sort((a, b) => a - b), total: answer.total, sql: sent.map(s => s.text).join("\n"), statements: sent.map(s => s.text) };
}

describe("catalog search on PostgreSQL", () => {
	it("asks the index for the rare word of a text and checks each row against the whole text", async () => {
		const r = await search("Product 1234");
		// 1234 and 12340-12349 are past SIZE: the one bench product; "Widget 1234" holds the word, not the text.
		expect(r.ids).toEqual(expected("product 1234"));
		expect(r.ids).toHaveLength(1);
		expect(r.total).toBe(1);
		expect(r.sql).toContain("LIKE '%1234%'");
		expect(r.sql).toContain("strpos(search_text, 'product 1234') > 0");
		expect(r.sql).not.toContain("'%product 1234%'");
		// Expected to end within its page: the page alone, which tells the total.
		expect(r.statements).toHaveLength(1);
		expect(r.sql).not.toContain("count(");
	});

	it("counts, by the same condition, a text whose rare word matches more than a page", async () => {
		const r = await search("product 123", 5);
		// 123 and 1230-1239: too few for the statistics' sample to expect a full page, so the page
		// is read alone and, being full, counted; the count's statement asks the index for "123" too.
		expect(r.total).toBe(11);
		expect(r.ids).toEqual(expected("product 123").slice(0, 5));
		expect(r.statements).toHaveLength(2);
		const count = r.statements.find(s => /^SELECT count\(/.test(s));
		expect(count).toContain("LIKE '%123%'");
		expect(count).toContain("strpos(search_text, 'product 123') > 0");
		// Words under three characters give the index nothing: the whole text is asked for.
		expect((await search("product 12")).sql).toContain("LIKE '%product 12%'");
	});

	it("finds the matches once for the page and its total when the statistics expect a full page, never walking the sort index", async () => {
		// Every bench product matches, as the sample says: one statement gives the page and the total.
		const r = await search("bench product", 20);
		expect(r.total).toBe(expected("bench product").length);
		expect(r.ids).toEqual(expected("bench product").slice(0, 20));
		expect(r.statements).toHaveLength(1);
		expect(r.sql).toContain("count(*)");
		// With table scans priced out (as at a catalog's size), the plan of the statement the service
		// sent reads the matches through the trigram index once, and nothing walks created_at.
		const client = new Client({ connectionString: dbs.urls.products });
		await client.connect();
		try {
			await client.query("SET enable_seqscan = off");
			const [{ "QUERY PLAN": plan }] = (await client.query(`EXPLAIN (FORMAT JSON) ${r.statements[0]}`)).rows;
			const nodes: Array<Record<string, unknown>> = [];
			const walk = (n: Record<string, unknown>) => {
				nodes.push(n);
				for (const c of (n.Plans as Array<Record<string, unknown>> | undefined) ?? []) walk(c);
			};
			walk(plan[0].Plan);
			const searching = nodes.filter(n => ["Filter", "Recheck Cond", "Index Cond"].some(k => String(n[k] ?? "").includes("search_text")));
			expect(searching.map(n => n["Node Type"]).sort()).toEqual(["Bitmap Heap Scan", "Bitmap Index Scan"]);
			expect(nodes.filter(n => String(n["Index Name"] ?? "").includes("created_at"))).toEqual([]);
		} finally {
			await client.end();
		}
		// A page past the end carries no row: its total is counted on its own, by the same condition.
		const past = await search("bench product", 20, 1000);
		expect(past).toMatchObject({ ids: [], total: expected("bench product").length });
		expect(past.statements.filter(s => /^SELECT count\(/.test(s))).toHaveLength(1);
	});

	it("asks for the whole text when every word of it is common, or it is one word", async () => {
		const common = await search("bench product");
		expect(common.sql).toContain("LIKE '%bench product%'");
		expect(common.sql).not.toContain("strpos");
		expect(common.total).toBe(expected("bench product").length);
		const one = await search("2345");
		expect(one.sql).toContain("LIKE '%2345%'");
		expect(one.sql).not.toContain("strpos");
		expect(one.ids).toEqual(expected("2345"));
	});

	it("finds the same rows as a substring match, across names and descriptions, for texts with a rare word", async () => {
		// All created at once: the page (createdAt, then id) is the first 100 ids.
		for (const q of ["product 2345", "of the search test, number 2999.", "widget 1234", "BENCH PRODUCT 777", "number 17"]) {
			const r = await search(q);
			expect({ q, ids: r.ids, total: r.total }).toEqual({ q, ids: expected(q).slice(0, 100), total: expected(q).length });
		}
		// "product 2345" is in a bench product's name and in the kettle's description.
		expect(expected("product 2345")).toHaveLength(2);
	});
});
