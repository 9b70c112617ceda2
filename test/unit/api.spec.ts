/**
 * The gateway on the embedded default: every route of the contract through HTTP, with users and
 * products on SQLite and the Memory cacher, and every error of API.md's table these routes give.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";

const ADMIN = { email: "admin@test.local", password: "admin-password-1" };
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let adminToken: string;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "products", "orders", "notifications"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders", "notifications"]),
		settings: {
			users: { admin: ADMIN },
			api: { loginRateLimit: { windowMs: 60_000, perIp: 1000, perEmail: 3 } },
		},
	});
	await broker.start();
	base = gatewayUrl(broker);
	adminToken = await login(base, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

async function register(email: string, password = "password-123", name = "Test User") {
	return http(base, "POST", "/api/users/register", { body: { email, password, name } });
}

async function createProduct(body: Record<string, unknown>) {
	return http(base, "POST", "/api/products", { body, token: adminToken });
}

describe("operations", () => {
	it("answers /health and /ready with every check up", async () => {
		expect((await http(base, "GET", "/health")).status).toBe(200);
		const ready = await http(base, "GET", "/ready");
		expect(ready.status).toBe(200);
		expect(ready.body.checks).toEqual({
			"database:users": "up",
			"database:products": "up",
			"database:orders": "up",
			"database:notifications": "up",
			cacher: "up",
			"service:users": "up",
			"service:products": "up",
			"service:orders": "up",
			"service:notifications": "up",
		});
	});

	it("serves an OpenAPI 3 document describing every route", async () => {
		const res = await http(base, "GET", "/api/openapi.json");
		expect(res.status).toBe(200);
		expect(res.body.openapi).toMatch(/^3\./);
		expect(Object.keys(res.body.paths)).toEqual(
			expect.arrayContaining(["/api/users/register", "/api/users/login", "/api/users/me", "/api/products", "/api/products/{id}", "/health", "/ready", "/metrics"]),
		);
		const create = res.body.paths["/api/products"].post;
		expect(create.requestBody.content["application/json"].schema.required).toEqual(expect.arrayContaining(["sku", "name", "category", "priceCents"]));
		expect(create.responses["409"]).toBeDefined();
	});

	it("sends security headers on every answer, errors included", async () => {
		for (const path of ["/health", "/api/nope"]) {
			const res = await http(base, "GET", path);
			expect(res.headers.get("x-content-type-options")).toBe("nosniff");
			expect(res.headers.get("x-frame-options")).toBe("DENY");
		}
	});

	it("answers an unknown route 404 NOT_FOUND", async () => {
		const res = await http(base, "GET", "/api/nope");
		expect(res.status).toBe(404);
		expect(res.body).toMatchObject({ code: 404, type: "NOT_FOUND" });
	});
});

describe("users", () => {
	it("registers, logs in and answers /me without any password hash", async () => {
		const reg = await register("Ayse@Example.com", "password-123", "Ayşe");
		expect(reg.status).toBe(201);
		expect(reg.body.user).toEqual({ id: expect.any(Number), email: "ayse@example.com", name: "Ayşe", role: "customer", createdAt: expect.any(String) });
		expect(reg.text).not.toMatch(/hash|scrypt/i);

		const token = await login(base, "ayse@example.com", "password-123");
		const me = await http(base, "GET", "/api/users/me", { token });
		expect(me.status).toBe(200);
		expect(me.body).toEqual(reg.body.user);
	});

	it("refuses a taken email with 409 EMAIL_TAKEN, whatever its case", async () => {
		await register("taken@example.com");
		const res = await register("TAKEN@example.com");
		expect(res.status).toBe(409);
		expect(res.body.type).toBe("EMAIL_TAKEN");
	});

	it("answers a wrong password and an unknown email with the same 401", async () => {
		await register("known@example.com");
		const wrong = await http(base, "POST", "/api/users/login", { body: { email: "known@example.com", password: "not-the-password" } });
		const unknown = await http(base, "POST", "/api/users/login", { body: { email: "nobody@example.com", password: "not-the-password" } });
		expect(wrong.status).toBe(401);
		expect(unknown.status).toBe(401);
		expect(wrong.body).toEqual(unknown.body);
		expect(wrong.body.type).toBe("UNAUTHORIZED");
	});

	it("refuses a role sent by the client with 422 naming the field", async () => {
		const res = await http(base, "POST", "/api/users/register", { body: { email: "role@example.com", password: "password-123", name: "x", role: "admin" } });
		expect(res.status).toBe(422);
		expect(res.body.type).toBe("VALIDATION_ERROR");
		expect(res.body.data).toEqual([expect.objectContaining({ field: "role" })]);
	});

	it("names every failing field of a bad registration", async () => {
		const res = await http(base, "POST", "/api/users/register", { body: { email: "not-an-email", password: "short" } });
		expect(res.status).toBe(422);
		expect(res.body.data.map((d: { field: string }) => d.field).sort()).toEqual(["email", "name", "password"]);
	});

	it("answers /me without a token, with a bad token and with a malformed header 401", async () => {
		for (const headers of [{}, { authorization: "Bearer not.a.token" }, { authorization: "Basic abc" }] as Array<Record<string, string>>) {
			const res = await http(base, "GET", "/api/users/me", { headers });
			expect(res.status).toBe(401);
			expect(res.body.type).toBe("UNAUTHORIZED");
		}
	});

	it("rate limits login per email with 429 and Retry-After", async () => {
		const body = { email: "limited@example.com", password: "wrong-password" };
		const statuses: number[] = [];
		for (let i = 0; i < 4; i++) statuses.push((await http(base, "POST", "/api/users/login", { body })).status);
		expect(statuses).toEqual([401, 401, 401, 429]);
		const res = await http(base, "POST", "/api/users/login", { body });
		expect(res.status).toBe(429);
		expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
		expect(res.body.type).toBe("TOO_MANY_REQUESTS");
	});
});

describe("products", () => {
	const widget = { sku: "W-1", name: "Widget", description: "A fine widget", category: "tools", priceCents: 1999, stock: 5 };

	it("creates a product as admin, then serves it MISS then HIT", async () => {
		const created = await createProduct(widget);
		expect(created.status).toBe(201);
		expect(created.body).toMatchObject({ ...widget, currency: "TRY", id: expect.any(Number) });
		expect(created.headers.get("location")).toBe(`/api/products/${created.body.id}`);

		const first = await http(base, "GET", `/api/products/${created.body.id}`);
		const second = await http(base, "GET", `/api/products/${created.body.id}`);
		expect(first.headers.get("x-cache")).toBe("MISS");
		expect(second.headers.get("x-cache")).toBe("HIT");
		expect(second.body).toEqual(created.body);
	});

	it("serves the new value right after a PATCH", async () => {
		const { body: p } = await createProduct({ ...widget, sku: "W-PATCH" });
		await http(base, "GET", `/api/products/${p.id}`);
		expect((await http(base, "GET", `/api/products/${p.id}`)).headers.get("x-cache")).toBe("HIT");

		const patched = await http(base, "PATCH", `/api/products/${p.id}`, { body: { priceCents: 2500, stock: 7 }, token: adminToken });
		expect(patched.status).toBe(200);
		expect(patched.body).toMatchObject({ priceCents: 2500, stock: 7 });

		const after = await http(base, "GET", `/api/products/${p.id}`);
		expect(after.headers.get("x-cache")).toBe("MISS");
		expect(after.body).toMatchObject({ priceCents: 2500, stock: 7 });
	});

	it("drops a product from cached lists once it is deleted, and answers 204 then 404", async () => {
		const { body: p } = await createProduct({ ...widget, sku: "W-DEL", category: "to-delete" });
		const before = await http(base, "GET", "/api/products?category=to-delete");
		expect(before.body.total).toBe(1);
		const del = await http(base, "DELETE", `/api/products/${p.id}`, { token: adminToken });
		expect(del.status).toBe(204);
		expect(del.text).toBe("");
		expect((await http(base, "GET", "/api/products?category=to-delete")).body.total).toBe(0);
		expect((await http(base, "GET", `/api/products/${p.id}`)).status).toBe(404);
		expect((await http(base, "DELETE", `/api/products/${p.id}`, { token: adminToken })).status).toBe(404);
	});

	it("lists with pagination, search over name and description, category and sort", async () => {
		for (let i = 1; i <= 5; i++) await createProduct({ ...widget, sku: `L-${i}`, name: `Lamp ${i}`, category: "lamps", priceCents: i * 100, description: i === 3 ? "has a 50% discount" : "" });
		const page = await http(base, "GET", "/api/products?category=lamps&pageSize=2&page=2&sort=priceCents");
		expect(page.status).toBe(200);
		expect(page.body).toMatchObject({ total: 5, page: 2, pageSize: 2, totalPages: 3 });
		expect(page.body.rows.map((r: { priceCents: number }) => r.priceCents)).toEqual([300, 400]);

		// A search's page and total: a full page (the total from the search's own statement), and a
		// page past the end, which still tells the total.
		const searched = await http(base, "GET", "/api/products?q=lamp&category=lamps&pageSize=2&page=2&sort=-priceCents");
		expect(searched.body).toMatchObject({ total: 5, page: 2, pageSize: 2, totalPages: 3 });
		expect(searched.body.rows.map((r: { priceCents: number }) => r.priceCents)).toEqual([300, 200]);
		expect((await http(base, "GET", "/api/products?q=lamp&category=lamps&pageSize=2&page=4")).body).toMatchObject({ rows: [], total: 5, totalPages: 3 });
		const search = await http(base, "GET", "/api/products?q=LAMP%204");
		expect(search.body.rows.map((r: { name: string }) => r.name)).toEqual(["Lamp 4"]);
		const percent = await http(base, "GET", "/api/products?q=50%25");
		expect(percent.body.rows.map((r: { name: string }) => r.name)).toEqual(["Lamp 3"]);
		const underscore = await http(base, "GET", "/api/products?q=_");
		expect(underscore.body.total).toBe(0);
		await createProduct({ ...widget, sku: "TR-1", name: "ÇAYDANLIK", category: "tr" });
		expect((await http(base, "GET", `/api/products?q=${encodeURIComponent("ÇAYDAN")}`)).body.rows.map((r: { sku: string }) => r.sku)).toEqual(["TR-1"]);
	});

	it("refuses a duplicate sku with 409 SKU_TAKEN, on create and on update", async () => {
		await createProduct({ ...widget, sku: "DUP-1" });
		const { body: other } = await createProduct({ ...widget, sku: "DUP-2" });
		expect((await createProduct({ ...widget, sku: "DUP-1" })).body.type).toBe("SKU_TAKEN");
		const upd = await http(base, "PATCH", `/api/products/${other.id}`, { body: { sku: "DUP-1" }, token: adminToken });
		expect(upd.status).toBe(409);
		expect(upd.body.type).toBe("SKU_TAKEN");
	});

	it.each([
		["pageSize=abc", "pageSize"],
		["pageSize=500", "pageSize"],
		["pageSize=0", "pageSize"],
		["page=0", "page"],
		["page=-1", "page"],
		["sort=password", "sort"],
		["sort=id;drop", "sort"],
		["unknown=1", "unknown"],
	])("refuses the list query %s with 422 naming %s", async (query, field) => {
		const res = await http(base, "GET", `/api/products?${query}`);
		expect(res.status).toBe(422);
		expect(res.body.type).toBe("VALIDATION_ERROR");
		expect(res.body.data.map((d: { field: string }) => d.field)).toContain(field);
	});

	it.each([
		[{ ...widget, sku: "N-1", priceCents: -1 }, "priceCents"],
		[{ ...widget, sku: "N-2", priceCents: 10.5 }, "priceCents"],
		[{ ...widget, sku: "N-3", priceCents: "100" }, "priceCents"],
		[{ ...widget, sku: "N-4", stock: -1 }, "stock"],
		[{ ...widget, sku: "N-5", stock: 1e12 }, "stock"],
		[{ ...widget, sku: "N-6", currency: "lira" }, "currency"],
		[{ ...widget, sku: "bad sku!" }, "sku"],
		[{ ...widget, sku: "N-8", id: 99 }, "id"],
		[{ ...widget, sku: "N-9", name: "" }, "name"],
	])("refuses a product with a bad field (%#) with 422 and stores nothing", async (body, field) => {
		const before = (await http(base, "GET", "/api/products?pageSize=1")).body.total;
		const res = await createProduct(body);
		expect(res.status).toBe(422);
		expect(res.body.data.map((d: { field: string }) => d.field)).toContain(field);
		expect((await http(base, "GET", "/api/products?pageSize=1")).body.total).toBe(before);
	});

	it("refuses an empty PATCH and a non-numeric id with 422, an unknown id with 404", async () => {
		const { body: p } = await createProduct({ ...widget, sku: "E-1" });
		expect((await http(base, "PATCH", `/api/products/${p.id}`, { body: {}, token: adminToken })).status).toBe(422);
		expect((await http(base, "GET", "/api/products/abc")).status).toBe(422);
		expect((await http(base, "GET", "/api/products/999999")).status).toBe(404);
		expect((await http(base, "PATCH", "/api/products/999999", { body: { stock: 1 }, token: adminToken })).status).toBe(404);
	});

	it("refuses text with a NUL character with 422 naming the field, on a query and on a body", async () => {
		const q = await http(base, "GET", `/api/products?q=${encodeURIComponent("a\u0000b")}`);
		expect(q.status).toBe(422);
		expect(JSON.stringify(q.body)).toContain('"q"');
		const reg = await http(base, "POST", "/api/users/register", { body: { email: "nul@example.com", password: "password-123", name: "N\u0000" } });
		expect(reg.status).toBe(422);
		expect(JSON.stringify(reg.body)).toContain('"name"');
		expect((await http(base, "POST", "/api/users/login", { body: { email: "nul@example.com", password: "password-123" } })).status).toBe(401);
	});

	it("refuses a value that cannot be printed (an object whose toString is not a function) with 422 naming the field", async () => {
		// fastest-validator formats the refused value into its message: this threw a TypeError, a 500.
		const login = await http(base, "POST", "/api/users/login", { body: { email: [{ toString: null }], password: "password-123" } });
		expect(login.status).toBe(422);
		expect(login.body.data).toEqual([expect.objectContaining({ field: "email" })]);
		const order = await http(base, "POST", "/api/products", { body: { ...widget, sku: "P-1", name: { valueOf: 1, toString: null } }, token: adminToken });
		expect(order.status).toBe(422);
		expect(JSON.stringify(order.body.data)).toContain('"name"');
		expect((await http(base, "GET", "/api/products?q=P-1")).body.total).toBe(0);
	});

	it("refuses a PATCH that sets a field to null with 422 naming it, and changes nothing", async () => {
		const { body: p } = await createProduct({ ...widget, sku: "N-1" });
		const res = await http(base, "PATCH", `/api/products/${p.id}`, { body: { priceCents: null, stock: 699 }, token: adminToken });
		expect(res.status).toBe(422);
		expect(JSON.stringify(res.body)).toContain("priceCents");
		expect((await http(base, "GET", `/api/products/${p.id}`)).body).toMatchObject({ priceCents: p.priceCents, stock: p.stock });
	});

	it("lets only admins write the catalog: 401 without a token, 403 for a customer", async () => {
		const reg = await register("customer@example.com");
		expect((await http(base, "POST", "/api/products", { body: widget })).status).toBe(401);
		const asCustomer = await http(base, "POST", "/api/products", { body: { ...widget, sku: "C-1" }, token: reg.body.token });
		expect(asCustomer.status).toBe(403);
		expect(asCustomer.body.type).toBe("FORBIDDEN");
		expect((await http(base, "DELETE", "/api/products/1", { token: reg.body.token })).status).toBe(403);
	});
});

describe("bodies", () => {
	it("answers malformed JSON 400 without the parser's message", async () => {
		const res = await http(base, "POST", "/api/users/register", { raw: '{"email": "a@b.c", ' });
		expect(res.status).toBe(400);
		expect(res.body).toEqual({ name: "BadRequestError", message: "The request body is not valid JSON", code: 400, type: "INVALID_JSON" });
	});

	it("answers a body that is not JSON 400, whatever its content type", async () => {
		for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
			const res = await http(base, "POST", "/api/users/register", { raw: "email=a@b.c&password=12345678&name=x", headers: { "content-type": type } });
			expect(res.status).toBe(400);
			expect(res.body.type).toBe("INVALID_JSON");
		}
	});

	it("answers a body over 1 MB 413 PAYLOAD_TOO_LARGE", async () => {
		const res = await http(base, "POST", "/api/users/register", { raw: JSON.stringify({ name: "x".repeat(1024 * 1024 + 10) }) });
		expect(res.status).toBe(413);
		expect(res.body.type).toBe("PAYLOAD_TOO_LARGE");
	});

	it("answers a JSON scalar or array body 400 or 422, never 500", async () => {
		for (const raw of ["42", '"text"', "null", "[1,2]", "[]"]) {
			const res = await http(base, "POST", "/api/users/register", { raw });
			expect([400, 422]).toContain(res.status);
		}
	});
});
