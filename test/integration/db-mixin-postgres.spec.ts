/**
 * The database mixin on PostgreSQL: migrations applied once however many nodes start together,
 * and a database that cannot be reached stops start-up with one line that names the URL with
 * its password masked.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, uniqueId } from "../support/broker";
import { TestDatabases, pgQuery, pgUrl, uniqueDbName, databaseExists } from "../support/pg";
import { requireServers } from "../support/servers";
import { migrations } from "../../services/products/migrations";

const dbs = new TestDatabases(["products"] as const);
const started: ServiceBroker[] = [];

function productsNode(databaseUrl: string): ServiceBroker {
	const broker = createNode({ services: ["products"], namespace: uniqueId("db"), databaseUrls: { products: databaseUrl } });
	started.push(broker);
	return broker;
}

/** broker.start()'s rejection, after stopping what did start. */
async function startFailure(broker: ServiceBroker): Promise<Error> {
	let error: Error | undefined;
	await broker.start().catch((err: Error) => {
		error = err;
	});
	await broker.stop().catch(() => undefined);
	if (!error) throw new Error("broker.start() resolved, a rejection was expected");
	return error;
}

let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres");
	serversUp = true;
	await dbs.create();
});

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	await Promise.all(started.map(b => b.stop().catch(() => undefined)));
	await dbs.drop();
});

describe("database mixin on PostgreSQL", () => {
	it("applies the migrations once when two products nodes start together on a fresh database", async () => {
		const a = productsNode(dbs.urls.products);
		const b = productsNode(dbs.urls.products);
		await Promise.all([a.start(), b.start()]);

		const db = dbs.names.products;
		expect(await pgQuery(db, "SELECT name FROM schema_migrations ORDER BY name")).toEqual(migrations.map(m => ({ name: m.name })));
		expect(await pgQuery(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")).toEqual([
			{ tablename: "products" },
			{ tablename: "reservations" },
			{ tablename: "schema_migrations" },
		]);
		expect(await pgQuery(db, "SELECT indexname FROM pg_indexes WHERE tablename = 'products' AND indexname = 'products_sku_unique'")).toHaveLength(1);

		// Both nodes serve the one table.
		const created = await a.call<{ id: number }, object>("products.create", { sku: "MIG-1", name: "Cam", category: "glass", priceCents: 100 });
		expect(await b.call("products.get", { id: created.id })).toMatchObject({ sku: "MIG-1" });
	});

	it("applies nothing again when a node restarts on a migrated database", async () => {
		const c = productsNode(dbs.urls.products);
		await c.start();
		await c.stop();
		expect(await pgQuery(dbs.names.products, "SELECT count(*)::int AS n FROM schema_migrations")).toEqual([{ n: migrations.length }]);
		expect(await pgQuery(dbs.names.products, "SELECT count(*)::int AS n FROM products WHERE sku = 'MIG-1'")).toEqual([{ n: 1 }]);
	});

	it("rejects start with one line naming the unreachable URL with its password masked, and no stack", async () => {
		const url = "postgres://postgres:secret@127.0.0.1:1/nope";
		const err = await startFailure(productsNode(url));
		expect(err.name).toBe("DatabaseUnreachableError");
		expect(err.message).toMatch(/^The products database at postgres:\/\/postgres:\*\*\*\*@127\.0\.0\.1:1\/nope cannot be reached: .*ECONNREFUSED/);
		expect(err.message).not.toContain("secret");
		expect(err.message).not.toContain("\n");
		expect(err.stack).not.toContain("\n");
		expect(err.stack).not.toContain("secret");
	});

	it("names a database that does not exist, masked, and says to create it", async () => {
		const missing = uniqueDbName("missing");
		const err = await startFailure(productsNode(pgUrl(missing, "s3cret")));
		expect(err.name).toBe("DatabaseUnreachableError");
		expect(err.message).toContain(`postgres://postgres:****@127.0.0.1:5432/${missing}`);
		expect(err.message).toMatch(/does not exist \(create it first/);
		expect(err.message).not.toContain("s3cret");
		expect(err.stack).not.toContain("\n");
		// Start-up never creates a database on its own.
		expect(await databaseExists(missing)).toBe(false);
	});
});
