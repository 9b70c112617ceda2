/**
 * The products database lost (a TCP proxy in front of PostgreSQL, cut): clients get 503
 * SERVICE_UNAVAILABLE, never a 500, nothing is half-written, and service resumes when it is back.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl } from "../support/broker";
import { http, login } from "../support/http";
import { requireServers, SERVERS } from "../support/servers";
import { createDatabase, dropDatabase, pgQuery, uniqueDbName } from "../support/pg";
import { TcpProxy } from "../support/tcp-proxy";
import { waitFor } from "../support/wait";

const ADMIN = { email: "admin@outage.test", password: "admin-password-1" };
const db = { users: uniqueDbName("users"), products: uniqueDbName("products") };
let proxy: TcpProxy;
let broker: ServiceBroker;
let base: string;
let token: string;

beforeAll(async () => {
	await requireServers("postgres");
	await createDatabase(db.users);
	await createDatabase(db.products);
	const pg = new URL(SERVERS.postgres);
	proxy = await TcpProxy.start({ host: pg.hostname, port: Number(pg.port || 5432) });
	const viaProxy = `postgres://postgres@127.0.0.1:${proxy.port}/${db.products}`;
	broker = createNode({
		services: ["api", "users", "products"],
		databaseUrls: { users: `${SERVERS.postgres.replace(/\/[^/]*$/, "")}/${db.users}`, products: viaProxy },
		settings: { users: { admin: ADMIN } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	token = await login(base, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
	await broker?.stop();
	await proxy?.close();
	await dropDatabase(db.users);
	await dropDatabase(db.products);
});

it("answers 503 while the products database is cut, and 200 again once it is back", async () => {
	const created = await http(base, "POST", "/api/products", { token, body: { sku: "O-1", name: "Lamp", category: "lamps", priceCents: 100 } });
	expect(created.status).toBe(201);

	proxy.cut();
	const answers = [
		await http(base, "GET", "/api/products/999"),
		await http(base, "GET", "/api/products?category=nothing-cached"),
		await http(base, "POST", "/api/products", { token, body: { sku: "O-2", name: "Desk", category: "desks", priceCents: 200 } }),
		await http(base, "PATCH", `/api/products/${created.body.id}`, { token, body: { priceCents: 150 } }),
	];
	for (const res of answers) {
		expect(res.status).toBe(503);
		expect(res.body).toMatchObject({ code: 503, type: "SERVICE_UNAVAILABLE" });
		expect(res.text).not.toMatch(/ECONN|terminated|Sequelize|at .*\.js/);
	}
	const ready = await http(base, "GET", "/ready");
	expect(ready.status).toBe(503);
	expect(ready.body.checks["database:products"]).toBe("down");

	proxy.restore();
	await waitFor("the products database", async () => (await http(base, "GET", "/ready")).body.checks["database:products"] === "up");
	expect((await http(base, "GET", `/api/products/${created.body.id}`)).body.priceCents).toBe(100);
	// Nothing refused during the cut was written.
	expect(await pgQuery(db.products, "SELECT sku, price_cents FROM products ORDER BY id")).toEqual([{ sku: "O-1", price_cents: 100 }]);
});
