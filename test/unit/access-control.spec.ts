/**
 * Access control through the gateway, item by item (issue 7 §3): refused tokens, one customer's
 * orders and notifications hidden from another, catalog writes for admins only, the login rate
 * limit per IP and per email, no password hash or internal error in any answer, and the security
 * headers on every answer. The signing of tokens is users' (unit/users.spec.ts checks resolveToken
 * itself); here every case goes through HTTP as a client would send it.
 */
import jwt from "jsonwebtoken";
import type { ServiceBroker } from "moleculer";
import { SECURITY_HEADERS } from "../../services/api/api.service";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login, type Res } from "../support/http";
import { waitFor } from "../support/wait";

const ADMIN = { email: "admin@access.test", password: "admin-password-1" };
const SECRET = process.env.JWT_SECRET!;
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let admin: string;
const alice = { id: 0, token: "" };
const bob = { id: 0, token: "" };
let productId: number;
let aliceOrder: string;
/** Every answer of this file, for the checks that hold on all of them. */
const answers: Array<{ what: string; res: Res }> = [];

async function call(method: string, path: string, opts: Parameters<typeof http>[3] = {}): Promise<Res> {
	const res = await http(base, method, path, opts);
	answers.push({ what: `${method} ${path} → ${res.status}`, res });
	return res;
}

type Db = { query(sql: string): Promise<[any[]]> };
const db = (service: string) => (broker.getLocalService(service) as unknown as { sequelize: Db }).sequelize;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "products", "orders", "notifications"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders", "notifications"]),
		settings: { users: { admin: ADMIN }, api: { loginRateLimit: { windowMs: 60_000, perIp: 8, perEmail: 3 } } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	admin = await login(base, ADMIN.email, ADMIN.password);
	for (const [who, email] of [
		[alice, "alice@access.test"],
		[bob, "bob@access.test"],
	] as const) {
		const reg = await call("POST", "/api/users/register", { body: { email, password: "password-123", name: email } });
		who.id = reg.body.user.id;
		who.token = reg.body.token;
	}
	productId = (await call("POST", "/api/products", { token: admin, body: { sku: "AC-1", name: "Tespih", category: "ac", priceCents: 250, stock: 10 } })).body.id;
	aliceOrder = (await call("POST", "/api/orders", { token: alice.token, body: { items: [{ productId, quantity: 2 }] } })).body.id;
	await waitFor("alice's order notification", async () =>
		(await call("GET", "/api/notifications", { token: alice.token })).body.rows.some((n: { orderId: string | null }) => n.orderId === aliceOrder),
	);
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

describe("tokens", () => {
	const deleted = { id: 0, token: "" };
	beforeAll(async () => {
		const reg = await call("POST", "/api/users/register", { body: { email: "gone@access.test", password: "password-123", name: "Gone" } });
		deleted.id = reg.body.user.id;
		deleted.token = reg.body.token;
		await db("users").query(`DELETE FROM users WHERE id = ${Number(deleted.id)}`);
	});

	const forged: Array<[string, () => string]> = [
		["expired", () => jwt.sign({ role: "customer" }, SECRET, { subject: String(alice.id), expiresIn: -10 })],
		["signed with another key", () => jwt.sign({ role: "admin" }, "another-secret-of-enough-length", { subject: String(alice.id) })],
		["alg none", () => jwt.sign({ role: "admin" }, "", { subject: String(alice.id), algorithm: "none" })],
		["alg none with a trailing signature", () => `${jwt.sign({ role: "admin" }, "", { subject: String(alice.id), algorithm: "none" })}c2lnbmF0dXJl`],
		["HS512 with the right key", () => jwt.sign({ role: "admin" }, SECRET, { subject: String(alice.id), algorithm: "HS512" })],
		["for a deleted user", () => deleted.token],
		["over 4096 characters", () => "a".repeat(5000)],
		["not a JWT", () => "not-a-token"],
	];

	it.each(forged)("refuses a token %s with 401 on every protected route", async (_name, make) => {
		const token = make();
		for (const [method, path] of [
			["GET", "/api/users/me"],
			["GET", "/api/orders"],
			["GET", `/api/orders/${aliceOrder}`],
			["GET", "/api/notifications"],
			["POST", `/api/orders/${aliceOrder}/cancel`],
			["POST", "/api/products"],
		] as const) {
			const res = await call(method, path, { token, ...(method === "POST" && path === "/api/products" ? { body: { sku: "X-1", name: "x", category: "x", priceCents: 1 } } : {}) });
			expect({ path, status: res.status, type: res.body?.type }).toEqual({ path, status: 401, type: "UNAUTHORIZED" });
		}
		expect((await db("orders").query(`SELECT status FROM orders WHERE id = '${aliceOrder}'`))[0]).toEqual([{ status: "placed" }]);
	});

	it("answers a public route with a bad token 401 too, never as anonymous", async () => {
		expect((await call("GET", "/api/products", { token: "not-a-token" })).status).toBe(401);
	});
});

describe("one customer's data is not another's", () => {
	it("answers bob 404 for alice's order, to read and to cancel, and leaves it placed", async () => {
		const read = await call("GET", `/api/orders/${aliceOrder}`, { token: bob.token });
		expect(read.status).toBe(404);
		const cancel = await call("POST", `/api/orders/${aliceOrder}/cancel`, { token: bob.token });
		expect(cancel.status).toBe(404);
		expect(read.body).toEqual(cancel.body);
		expect((await call("GET", `/api/orders/${aliceOrder}`, { token: alice.token })).body.status).toBe("placed");
	});

	it("lists only the caller's orders and notifications", async () => {
		const orders = await call("GET", "/api/orders", { token: bob.token });
		expect(orders.body).toMatchObject({ total: 0, rows: [] });
		const notes = await call("GET", "/api/notifications", { token: bob.token });
		expect(notes.body.rows.every((n: { orderId: string | null }) => n.orderId !== aliceOrder)).toBe(true);
		expect(notes.body.rows.filter((n: { type: string }) => n.type !== "user.registered")).toEqual([]);
		// A query parameter cannot widen it.
		expect((await call("GET", `/api/notifications?userId=${alice.id}`, { token: bob.token })).status).toBe(422);
		expect((await call("GET", `/api/orders?userId=${alice.id}`, { token: bob.token })).status).toBe(422);
	});
});

describe("the catalog", () => {
	it.each([
		["without a token", undefined, 401],
		["as a customer", () => alice.token, 403],
	] as const)("refuses every write %s, and writes nothing", async (_name, token, status) => {
		const before = (await db("products").query("SELECT * FROM products ORDER BY id"))[0];
		const t = token?.();
		const writes = [
			await call("POST", "/api/products", { token: t, body: { sku: "AC-2", name: "Fes", category: "ac", priceCents: 100 } }),
			await call("PATCH", `/api/products/${productId}`, { token: t, body: { priceCents: 1 } }),
			await call("DELETE", `/api/products/${productId}`, { token: t }),
		];
		expect(writes.map(w => w.status)).toEqual([status, status, status]);
		expect((await db("products").query("SELECT * FROM products ORDER BY id"))[0]).toEqual(before);
	});

	it("takes the role from the database: a customer's token claiming admin is refused 403", async () => {
		const claim = jwt.sign({ role: "admin" }, SECRET, { subject: String(bob.id), algorithm: "HS256" });
		expect((await call("POST", "/api/products", { token: claim, body: { sku: "AC-3", name: "Fes", category: "ac", priceCents: 100 } })).status).toBe(403);
	});
});

describe("login rate limit", () => {
	it("answers 429 with Retry-After past the limit per email, whatever the case of the email", async () => {
		const statuses: number[] = [];
		for (const email of ["rl@access.test", "RL@access.test", "rl@ACCESS.test", " rl@access.test "])
			statuses.push((await call("POST", "/api/users/login", { body: { email, password: "wrong-password" } })).status);
		expect(statuses).toEqual([401, 401, 401, 429]);
	});

	it("answers 429 with Retry-After past the limit per IP, across emails, the right password included", async () => {
		let last: Res | undefined;
		// 8 per IP: the admin's login in beforeAll, the 4 attempts above and 3 here fill the window.
		for (let i = 0; i < 3; i++) expect((await call("POST", "/api/users/login", { body: { email: `ip${i}@access.test`, password: "wrong-password" } })).status).toBe(401);
		last = await call("POST", "/api/users/login", { body: { email: ADMIN.email, password: ADMIN.password } });
		expect(last.status).toBe(429);
		expect(last.body).toMatchObject({ code: 429, type: "TOO_MANY_REQUESTS" });
		const retryAfter = Number(last.headers.get("retry-after"));
		expect(Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= 60).toBe(true);
	});
});

describe("what answers never carry", () => {
	it("answers an unexpected failure 500 with a generic body, no SQL and no stack", async () => {
		// A table gone from under the service: an error no code path expects.
		await db("notifications").query("ALTER TABLE notifications RENAME TO notifications_away");
		try {
			const res = await call("GET", "/api/notifications", { token: alice.token });
			expect(res.status).toBe(500);
			expect(res.body).toEqual({ name: "InternalServerError", message: "Internal server error", code: 500, type: "INTERNAL_ERROR" });
		} finally {
			await db("notifications").query("ALTER TABLE notifications_away RENAME TO notifications");
		}
	});

	it("never carries a password hash, a stack or a driver's message, and always the security headers", async () => {
		await call("GET", "/api/users/me", { token: alice.token });
		await call("GET", "/api/orders", { token: admin });
		await call("POST", "/api/users/login", { raw: "{", headers: { "content-type": "application/json" } });
		await call("POST", "/api/products", { token: admin, raw: JSON.stringify({ name: "x".repeat(1_100_000) }) });
		await call("GET", "/health");
		await call("GET", "/ready");
		await call("GET", "/api/openapi.json");
		await call("GET", "/api/nope");
		await call("OPTIONS", "/api/products", { headers: { origin: "http://example.com", "access-control-request-method": "POST" } });
		expect(answers.length).toBeGreaterThan(60);
		for (const { what, res } of answers) {
			expect({ what, leak: /passwordHash|password_hash|scrypt|"stack"|\n\s+at |SQLITE|Sequelize|node_modules/i.test(res.text) }).toEqual({ what, leak: false });
			for (const [name, value] of Object.entries(SECURITY_HEADERS)) expect({ what, [name]: res.headers.get(name) }).toEqual({ what, [name]: value });
			expect({ what, poweredBy: res.headers.get("x-powered-by") }).toEqual({ what, poweredBy: null });
		}
	});
});
