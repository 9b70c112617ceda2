/**
 * The embedded default end to end: every service in one process, events through the in-process
 * channel adapter from the outboxes, notifications visible through the gateway.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";
import { waitFor } from "../support/wait";
import { createSequelize } from "../../mixins/db.mixin";

const ADMIN = { email: "admin@local.test", password: "admin-password-1" };
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let admin: string;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "products", "orders", "notifications"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders", "notifications"]),
		settings: { users: { admin: ADMIN, outboxPollMs: 100 }, orders: { outboxPollMs: 100 } },
		channels: { dataDir: tmp.dir },
	});
	await broker.start();
	base = gatewayUrl(broker);
	admin = await login(base, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

async function query<T>(service: string, sql: string): Promise<T[]> {
	const db = createSequelize(sqliteUrls(tmp.dir, [service])[service]);
	try {
		const [rows] = await db.query(sql);
		return rows as T[];
	} finally {
		await db.close();
	}
}

const notifications = async (token: string) => (await http(base, "GET", "/api/notifications?pageSize=100", { token })).body.rows as Array<{ type: string; orderId: string | null; status: string }>;

it("notifies a registration, an order and its cancellation, each once, through the outboxes", async () => {
	const reg = await http(base, "POST", "/api/users/register", { body: { email: "local@example.com", password: "password-123", name: "Local" } });
	const token = reg.body.token;
	const product = await http(base, "POST", "/api/products", { token: admin, body: { sku: "LOC-1", name: "Lamp", category: "l", priceCents: 2500, stock: 3 } });
	const placed = await http(base, "POST", "/api/orders", { token, body: { items: [{ productId: product.body.id, quantity: 2 }] } });
	expect(placed.status).toBe(201);
	await http(base, "POST", `/api/orders/${placed.body.id}/cancel`, { token });

	await waitFor("three notifications", async () => (await notifications(token)).length === 3);
	const rows = await notifications(token);
	expect(rows.map(r => [r.type, r.orderId, r.status]).sort()).toEqual(
		[
			["order.cancelled", placed.body.id, "sent"],
			["order.created", placed.body.id, "sent"],
			["user.registered", null, "sent"],
		].sort(),
	);
	// Every outbox row was confirmed, and the stock came back once.
	await waitFor("the outboxes to drain", async () => {
		const pending = [
			...(await query("orders", "SELECT 1 FROM outbox WHERE sent_at IS NULL")),
			...(await query("users", "SELECT 1 FROM outbox WHERE sent_at IS NULL")),
		];
		return pending.length === 0;
	});
	expect((await http(base, "GET", `/api/products/${product.body.id}`)).body.stock).toBe(3);
});

it("holds a placed order's reservation as confirmed", async () => {
	const reg = await http(base, "POST", "/api/users/register", { body: { email: "confirm@example.com", password: "password-123", name: "C" } });
	const product = await http(base, "POST", "/api/products", { token: admin, body: { sku: "LOC-2", name: "Desk", category: "d", priceCents: 100, stock: 3 } });
	const placed = await http(base, "POST", "/api/orders", { token: reg.body.token, body: { items: [{ productId: product.body.id, quantity: 1 }] } });
	await waitFor("the reservation to be confirmed", async () => {
		const [row] = await query<{ status: string }>("products", `SELECT status FROM reservations WHERE order_id = '${placed.body.id}'`);
		return row?.status === "confirmed";
	});
});
