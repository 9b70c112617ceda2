/**
 * Baselines on PostgreSQL through `pg`, no framework, in two fresh databases the bench created:
 * - GET /api/products/:id: one SELECT by primary key, the row as the product's JSON;
 * - POST /api/orders {productId, quantity}: the SQL of one order as our services run it, database
 *   per service: reserve in the products database (stock decrement + reservation row, one
 *   transaction), then the order and its outbox row in the orders database (one transaction), then
 *   the reservation confirmed. No relay, no events: the floor of the writes alone.
 * It creates its tables, seeds BENCH_PRODUCTS products, prints "ready". Pools of 10, as the db mixin.
 * Env: PORT, PRODUCTS_URL, ORDERS_URL, BENCH_PRODUCTS.
 */
import http from "node:http";
import { randomUUID } from "node:crypto";
import { Pool, type PoolClient } from "pg";
import { product } from "../common";

const products = new Pool({ connectionString: process.env.PRODUCTS_URL, max: 10 });
const orders = new Pool({ connectionString: process.env.ORDERS_URL, max: 10 });
const n = Number(process.env.BENCH_PRODUCTS ?? 10_000);

async function tx<T>(pool: Pool, work: (c: PoolClient) => Promise<T>): Promise<T> {
	const c = await pool.connect();
	try {
		await c.query("BEGIN");
		const out = await work(c);
		await c.query("COMMIT");
		return out;
	} catch (err) {
		await c.query("ROLLBACK").catch(() => undefined);
		throw err;
	} finally {
		c.release();
	}
}

async function setup(): Promise<void> {
	await products.query(`CREATE TABLE products (id serial PRIMARY KEY, sku varchar(64) NOT NULL UNIQUE, name varchar(200) NOT NULL,
		description text NOT NULL, category varchar(100) NOT NULL, price_cents integer NOT NULL, currency varchar(3) NOT NULL,
		stock integer NOT NULL CHECK (stock >= 0), created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`);
	await products.query(`CREATE TABLE reservations (order_id varchar(36) PRIMARY KEY, lines text NOT NULL, status varchar(16) NOT NULL,
		expires_at timestamptz NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`);
	await orders.query(`CREATE TABLE orders (id varchar(36) PRIMARY KEY, user_id integer NOT NULL, status varchar(16) NOT NULL, items text NOT NULL,
		total_cents bigint NOT NULL, currency varchar(3) NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)`);
	await orders.query(`CREATE TABLE outbox (event_id varchar(36) PRIMARY KEY, event varchar(64) NOT NULL, payload text NOT NULL,
		created_at timestamptz NOT NULL, sent_at timestamptz)`);
	for (let i = 1; i <= n; i += 1000) {
		const rows = [];
		for (let id = i; id < Math.min(i + 1000, n + 1); id++) rows.push(product(id));
		await products.query(
			`INSERT INTO products (id, sku, name, description, category, price_cents, currency, stock, created_at, updated_at)
			 SELECT * FROM json_to_recordset($1) AS x(id int, sku text, name text, description text, category text, "priceCents" int, currency text, stock int, "createdAt" timestamptz, "updatedAt" timestamptz)`,
			[JSON.stringify(rows)],
		);
	}
}

const toProduct = (r: Record<string, unknown>) => ({
	id: r.id, sku: r.sku, name: r.name, description: r.description, category: r.category, priceCents: r.price_cents,
	currency: r.currency, stock: r.stock, createdAt: (r.created_at as Date).toISOString(), updatedAt: (r.updated_at as Date).toISOString(),
});

async function placeOrder(body: { productId: number; quantity: number }): Promise<{ status: number; body: unknown }> {
	const orderId = randomUUID();
	const now = new Date();
	const line = await tx(products, async c => {
		const r = await c.query("UPDATE products SET stock = stock - $2, updated_at = $3 WHERE id = $1 AND stock >= $2 RETURNING name, price_cents, currency", [body.productId, body.quantity, now]);
		if (r.rowCount === 0) return null;
		const l = { productId: body.productId, quantity: body.quantity, name: r.rows[0].name, priceCents: r.rows[0].price_cents, currency: r.rows[0].currency };
		await c.query("INSERT INTO reservations VALUES ($1, $2, 'held', $3, $4, $4)", [orderId, JSON.stringify([l]), new Date(now.getTime() + 300_000), now]);
		return l;
	});
	if (!line) return { status: 409, body: { error: "out of stock" } };
	const order = { id: orderId, userId: 1, status: "placed", items: [line], totalCents: line.priceCents * line.quantity, currency: line.currency, createdAt: now.toISOString() };
	await tx(orders, async c => {
		await c.query("INSERT INTO orders VALUES ($1, 1, 'placed', $2, $3, $4, $5, $5)", [orderId, JSON.stringify(order.items), order.totalCents, order.currency, now]);
		await c.query("INSERT INTO outbox VALUES ($1, 'order.created', $2, $3, NULL)", [randomUUID(), JSON.stringify(order), now]);
	});
	await products.query("UPDATE reservations SET status = 'confirmed', updated_at = $2 WHERE order_id = $1 AND status = 'held'", [orderId, new Date()]);
	return { status: 201, body: order };
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
	const text = JSON.stringify(body);
	res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text) }).end(text);
}

async function main(): Promise<void> {
	await setup();
	const server = http.createServer((req, res) => {
		const m = /^\/api\/products\/(\d+)$/.exec(req.url ?? "");
		if (req.method === "GET" && m) {
			products.query("SELECT * FROM products WHERE id = $1", [Number(m[1])]).then(
				r => (r.rowCount ? send(res, 200, toProduct(r.rows[0])) : send(res, 404, { error: "not found" })),
				() => send(res, 500, { error: "internal" }),
			);
			return;
		}
		if (req.method === "POST" && req.url === "/api/orders") {
			let raw = "";
			req.on("data", d => (raw += d));
			req.on("end", () => {
				const items = (JSON.parse(raw) as { items: Array<{ productId: number; quantity: number }> }).items;
				placeOrder(items[0]).then(
					r => send(res, r.status, r.body),
					() => send(res, 500, { error: "internal" }),
				);
			});
			return;
		}
		send(res, 404, { error: "not found" });
	});
	server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("ready"));
	process.on("SIGTERM", () => {
		server.close();
		void Promise.all([products.end(), orders.end()]).then(() => process.exit(0));
	});
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
