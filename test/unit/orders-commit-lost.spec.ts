/**
 * An order whose COMMIT landed but whose answer was lost with the database connection (what
 * test/faults/orders-db-cut.spec.ts meets when the cut falls on a COMMIT): the client gets 503, and
 * the stock stays with the order. Releasing it then would let the stock of a placed order be sold
 * twice. Here the orders service's transaction commits for real and then throws the connection
 * error node-postgres gives, so the moment is exact instead of a race.
 */
import type { ServiceBroker } from "moleculer";
import { ConnectionError } from "sequelize";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";
import { waitFor } from "../support/wait";

const ADMIN = { email: "admin@commit-lost.test", password: "admin-password-1" };
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "products", "orders"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders"]),
		settings: { users: { admin: ADMIN }, products: { reservationTtlMs: 300, reservationSweepMs: 100, reservationGraceMs: 100 } },
	});
	await broker.start();
	base = gatewayUrl(broker);
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

it("keeps the stock of an order whose commit answer was lost, and the retry with its key answers that order", async () => {
	const admin = await login(base, ADMIN.email, ADMIN.password);
	const product = (await http(base, "POST", "/api/products", { token: admin, body: { sku: "CL-1", name: "Cezve", category: "cl", priceCents: 700, stock: 5 } })).body;
	const customer = (await http(base, "POST", "/api/users/register", { body: { email: "cl@example.com", password: "password-123", name: "CL" } })).body.token;

	const orders = broker.getLocalService("orders") as unknown as { transaction: (fn: unknown) => Promise<unknown> };
	const real = orders.transaction;
	orders.transaction = async fn => {
		await real.call(orders, fn);
		throw new ConnectionError(Object.assign(new Error("Connection terminated unexpectedly"), { code: undefined }));
	};
	const body = { items: [{ productId: product.id, quantity: 2 }] };
	const lost = await http(base, "POST", "/api/orders", { token: customer, body, headers: { "idempotency-key": "cl-1" } });
	orders.transaction = real;
	expect(lost.status).toBe(503);

	// The order exists: the sweeper confirms its reservation instead of giving the stock back.
	const productsDb = (broker.getLocalService("products") as unknown as { sequelize: { query(sql: string): Promise<[any[]]> } }).sequelize;
	const stock = async () => (await productsDb.query(`SELECT stock FROM products WHERE id = ${Number(product.id)}`))[0][0].stock;
	const reservation = async () => (await productsDb.query("SELECT status FROM reservations"))[0];
	await waitFor("the sweeper to settle the reservation", async () => (await reservation())[0]?.status !== "held", 5000);
	expect(await reservation()).toEqual([{ status: "confirmed" }]);
	expect(await stock()).toBe(3);

	const retry = await http(base, "POST", "/api/orders", { token: customer, body, headers: { "idempotency-key": "cl-1" } });
	expect(retry.status).toBe(200);
	expect(retry.body.items).toMatchObject([{ productId: product.id, quantity: 2 }]);
	expect(await stock()).toBe(3);
});
