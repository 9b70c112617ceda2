/**
 * Every route of the contract driven with generated hostile input (fast-check): wrong types,
 * missing and extra fields, huge and negative numbers, unicode and control characters, SQL and
 * JSON injection strings, huge arrays and deep nesting, in bodies, query strings, path ids and
 * headers. For each input: never a 5xx, never a stack trace or internal detail, an error body of
 * the contract's shape, and a refused request changes nothing that is stored (a fingerprint of every
 * table a route writes, taken before and after). Runs on the embedded default (one process,
 * SQLite), with the login rate limit raised so that it does not answer instead of the validation.
 */
import { createHash } from "node:crypto";
import fc from "fast-check";
import type { ServiceBroker } from "moleculer";
import { ROUTES } from "../../services/api/routes";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login, type Res } from "../support/http";

const ADMIN = { email: "admin@fuzz.test", password: "admin-password-1" };
/** Inputs per route; the total is printed. */
const RUNS = Number(process.env.FUZZ_RUNS || 80);
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let tokens: { admin: string; customer: string };
let productId: number;
let orderId: string;
const byStatus = new Map<number, number>();
let inputs = 0;

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "products", "orders", "notifications"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products", "orders", "notifications"]),
		settings: {
			users: { admin: ADMIN },
			api: { loginRateLimit: { windowMs: 60_000, perIp: 1_000_000, perEmail: 1_000_000 } },
			// No sweeper: stock changes only through requests, so the fingerprint is the requests' doing.
			products: { reservationSweepMs: 0 },
		},
	});
	await broker.start();
	base = gatewayUrl(broker);
	const admin = await login(base, ADMIN.email, ADMIN.password);
	const customer = (await http(base, "POST", "/api/users/register", { body: { email: "fuzz@example.com", password: "password-123", name: "Fuzz" } })).body.token;
	tokens = { admin, customer };
	productId = (await http(base, "POST", "/api/products", { token: admin, body: { sku: "FZ-1", name: "Nargile", category: "fz", priceCents: 100, stock: 1_000_000 } })).body.id;
	orderId = (await http(base, "POST", "/api/orders", { token: customer, body: { items: [{ productId, quantity: 1 }] } })).body.id;
});

afterAll(async () => {
	await broker?.stop();
	tmp?.remove();
	const statuses = [...byStatus.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`);
	console.log(`[fuzz] ${inputs} hostile inputs over ${ROUTES.length} routes (${RUNS} per case), by status { ${statuses.join(", ")} }`);
});

// ---- what is stored -------------------------------------------------------------------------

type Db = { query(sql: string): Promise<[unknown[]]> };
const db = (service: string) => (broker.getLocalService(service) as unknown as { sequelize: Db }).sequelize;

/**
 * Every row a route can write. Left out: what the events of accepted requests write later
 * (notifications; the outbox's sent marks, so outbox rows by id only; a reservation going from
 * held to confirmed when its order.created arrives, so held and confirmed are one state here: the
 * stock is taken either way, and a refused request must neither take nor give back any).
 */
async function fingerprint(): Promise<string> {
	const parts = await Promise.all([
		db("users").query("SELECT * FROM users ORDER BY id"),
		db("users").query("SELECT event_id FROM outbox ORDER BY event_id"),
		db("products").query("SELECT * FROM products ORDER BY id"),
		db("products").query("SELECT order_id, CASE status WHEN 'released' THEN 'released' ELSE 'taken' END AS state, lines FROM reservations ORDER BY order_id"),
		db("orders").query("SELECT * FROM orders ORDER BY id"),
		db("orders").query("SELECT event_id FROM outbox ORDER BY event_id"),
	]);
	return createHash("sha256").update(JSON.stringify(parts.map(p => p[0]))).digest("hex");
}

// ---- hostile values -------------------------------------------------------------------------

const INJECTIONS = [
	"' OR '1'='1",
	"1; DROP TABLE products; --",
	"1 UNION SELECT password_hash FROM users",
	'" OR ""="',
	"%' --",
	"\\",
	"%_%",
	'{"$gt":""}',
	'{"__proto__":{"role":"admin"}}',
	"__proto__",
	"constructor",
	"${7*7}{{7*7}}",
	"<script>alert(1)</script>",
	"../../etc/passwd",
	"\u0000",
	"\u202e\u0000\u001f\u007f",
	"NaN",
	"Infinity",
	"-0",
	"1e309",
	"0x1F",
	" ",
	"",
	"😀".repeat(300),
	"a".repeat(20_000),
];
const NUMBERS = [1e308, -1e308, 2 ** 53 + 1, -(2 ** 53 + 1), 2 ** 31, -(2 ** 31) - 1, 0, -1, 0.5, -0.0001, 5e-324];

function nest(depth: number, kind: "object" | "array"): unknown {
	let v: unknown = 1;
	for (let i = 0; i < depth; i++) v = kind === "object" ? { a: v } : [v];
	return v;
}

const leaf = fc.oneof(
	fc.string({ maxLength: 40 }),
	fc.string({ unit: "binary", maxLength: 20 }),
	fc.integer(),
	fc.double(),
	fc.constantFrom(...NUMBERS),
	fc.boolean(),
	fc.constant(null),
	fc.constantFrom(...INJECTIONS),
);
const { value } = fc.letrec(tie => ({
	value: fc.oneof(
		{ depthSize: "small" },
		leaf,
		fc.array(tie("value"), { maxLength: 4 }),
		fc.dictionary(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("__proto__", "constructor", "$where", "role")), tie("value"), { maxKeys: 4 }),
	),
}));
const huge = fc.constantFrom(nest(3000, "object"), nest(3000, "array"), new Array(50_000).fill(1), new Array(5_000).fill({ productId: 1, quantity: 1 }));
const hostile = fc.oneof({ weight: 8, arbitrary: value }, { weight: 1, arbitrary: huge });

/**
 * A body with the route's fields, each either a plausible value or a hostile one, some missing,
 * sometimes extra fields; or a hostile value as the whole body.
 */
function bodyOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
	const entries = Object.fromEntries(Object.entries(fields).map(([k, plausible]) => [k, fc.oneof(plausible, hostile)]));
	const record = fc.record(entries, { requiredKeys: [] });
	const extra = fc.dictionary(fc.constantFrom("role", "id", "priceCents", "userId", "status", "__proto__", "x"), hostile, { maxKeys: 2 });
	return fc.oneof({ weight: 6, arbitrary: fc.tuple(record, extra).map(([r, e]) => ({ ...e, ...r })) }, { weight: 1, arbitrary: hostile });
}

/** A query string of the given parameters (plausible or hostile, repeated keys too). */
function queryOf(params: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<string> {
	const names = [...Object.keys(params), "x", "__proto__", "page[]"];
	const one = fc.tuple(fc.constantFrom(...names), fc.oneof(fc.oneof(...Object.values(params)), hostile));
	return fc.array(one, { maxLength: 5 }).map(pairs => {
		const q = new URLSearchParams();
		for (const [k, v] of pairs) q.append(k, typeof v === "string" ? v : JSON.stringify(v) ?? "");
		return q.toString() ? `?${q}` : "";
	});
}

/** A path segment for an id: plausible, or anything, URL-encoded. */
const idSegment = (plausible: () => string) =>
	fc.oneof(fc.constant(null).map(() => plausible()), hostile.map(v => encodeURIComponent(typeof v === "string" ? v : JSON.stringify(v) ?? "")));

/** A header value as fetch can send it: printable ASCII only. */
const headerValue = hostile.map(v => (typeof v === "string" ? v : JSON.stringify(v) ?? "").replace(/[^\x20-\x7e]/g, "?").slice(0, 8000));

const plausible = {
	email: fc.oneof(fc.emailAddress(), fc.constant(ADMIN.email)),
	password: fc.string({ minLength: 8, maxLength: 20 }),
	name: fc.string({ minLength: 1, maxLength: 20 }),
	sku: fc.stringMatching(/^[A-Z]{2}-[0-9]{1,4}$/),
	priceCents: fc.integer({ min: 0, max: 100_000 }),
	stock: fc.integer({ min: 0, max: 1000 }),
	currency: fc.constantFrom("TRY", "EUR", "try"),
	items: fc.array(fc.record({ productId: fc.constant(0).map(() => productId), quantity: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 3 }),
	page: fc.integer({ min: 1, max: 3 }).map(String),
	pageSize: fc.integer({ min: 1, max: 100 }).map(String),
	sort: fc.constantFrom("name", "-name", "priceCents", "-priceCents", "createdAt", "price"),
};

// ---- the check of every answer ---------------------------------------------------------------

const LEAKS = /\n\s+at |\bat [\w.<>]+ \(|node_modules|Sequelize|SQLITE|sqlite3|"stack"|password_?hash|scrypt\$|ECONN|TypeError|ReferenceError/i;

async function check(method: string, path: string, opts: Parameters<typeof http>[3], allowed: number[]): Promise<void> {
	const before = await fingerprint();
	const res: Res = await http(base, method, path, opts);
	const after = res.status >= 400 ? await fingerprint() : before;
	inputs++;
	byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
	const where = `${method} ${path.slice(0, 200)} → ${res.status} ${res.text.slice(0, 300)}`;
	if (res.status >= 500) throw new Error(`a 5xx: ${where}`);
	if (LEAKS.test(res.text)) throw new Error(`an internal detail in the answer: ${where}`);
	// Node's HTTP server itself answers a request line or headers over 16 KB with 431 and no body.
	if (res.status === 431 && path.length + JSON.stringify(opts?.headers ?? {}).length > 16_000) return;
	if (!allowed.includes(res.status)) throw new Error(`a status outside ${allowed.join("/")}: ${where}`);
	if (res.status >= 400) {
		if (typeof res.body?.code !== "number" || typeof res.body?.type !== "string" || typeof res.body?.message !== "string")
			throw new Error(`an error body not of the contract's shape: ${where}`);
		if (res.status === 422 && !(Array.isArray(res.body.data) && res.body.data.length > 0 && res.body.data.every((d: { field?: unknown }) => typeof d.field === "string")))
			throw new Error(`a 422 that names no field: ${where}`);
		if (after !== before) throw new Error(`a refused request changed stored data: ${where}`);
	}
}

const run = (property: fc.IAsyncProperty<any>) => fc.assert(property, { numRuns: RUNS, endOnFailure: true });
const auth = (token: string | null): Record<string, string> => (token ? { authorization: `Bearer ${token}` } : {});
const who = fc.constantFrom<"admin" | "customer" | null>("admin", "customer", null);
const tokenOf = (w: "admin" | "customer" | null) => (w ? tokens[w] : null);
const BODY = [400, 401, 403, 404, 409, 413, 422];

describe("hostile input on every route", () => {
	it("POST /users/register", () =>
		run(
			fc.asyncProperty(bodyOf({ email: plausible.email, password: plausible.password, name: plausible.name }), b =>
				check("POST", "/api/users/register", { body: b }, [201, ...BODY]),
			),
		));

	it("POST /users/login", () =>
		run(fc.asyncProperty(bodyOf({ email: plausible.email, password: plausible.password }), b => check("POST", "/api/users/login", { body: b }, [200, ...BODY]))));

	it("GET /users/me with hostile Authorization headers", () =>
		run(
			fc.asyncProperty(headerValue, fc.constantFrom("Bearer ", "", "Basic ", "bearer  "), (h, scheme) =>
				check("GET", "/api/users/me", { headers: { authorization: scheme + h } }, [401]),
			),
		));

	it("GET /products with hostile queries", () =>
		run(
			fc.asyncProperty(
				queryOf({ page: plausible.page, pageSize: plausible.pageSize, q: fc.constantFrom(...INJECTIONS), category: plausible.name, sort: plausible.sort }),
				q => check("GET", `/api/products${q}`, {}, [200, 422]),
			),
		));

	it("GET /products/:id", () => run(fc.asyncProperty(idSegment(() => String(productId)), id => check("GET", `/api/products/${id}`, {}, [200, 404, 422]))));

	it("POST /products", () =>
		run(
			fc.asyncProperty(
				who,
				bodyOf({ sku: plausible.sku, name: plausible.name, category: plausible.name, priceCents: plausible.priceCents, stock: plausible.stock, currency: plausible.currency, description: plausible.name }),
				(w, b) => check("POST", "/api/products", { body: b, headers: auth(tokenOf(w)) }, [201, ...BODY]),
			),
		));

	it("PATCH /products/:id", () =>
		run(
			fc.asyncProperty(who, idSegment(() => String(productId)), bodyOf({ name: plausible.name, priceCents: plausible.priceCents, stock: plausible.stock }), (w, id, b) =>
				check("PATCH", `/api/products/${id}`, { body: b, headers: auth(tokenOf(w)) }, [200, ...BODY]),
			),
		));

	it("DELETE /products/:id", () =>
		// The fixture product stays: a plausible id here is one that does not exist.
		run(fc.asyncProperty(who, idSegment(() => "999999"), (w, id) => check("DELETE", `/api/products/${id}`, { headers: auth(tokenOf(w)) }, [204, 401, 403, 404, 422]))));

	it("POST /orders with hostile bodies and Idempotency-Keys", () =>
		run(
			fc.asyncProperty(who, bodyOf({ items: plausible.items }), fc.option(headerValue), (w, b, key) =>
				check("POST", "/api/orders", { body: b, headers: { ...auth(tokenOf(w)), ...(key !== null ? { "idempotency-key": key } : {}) } }, [200, 201, ...BODY]),
			),
		));

	it("GET /orders", () =>
		run(fc.asyncProperty(who, queryOf({ page: plausible.page, pageSize: plausible.pageSize }), (w, q) => check("GET", `/api/orders${q}`, { headers: auth(tokenOf(w)) }, [200, 401, 422]))));

	it("GET /orders/:id", () =>
		run(fc.asyncProperty(who, idSegment(() => orderId), (w, id) => check("GET", `/api/orders/${id}`, { headers: auth(tokenOf(w)) }, [200, 401, 404, 422]))));

	it("POST /orders/:id/cancel", () =>
		// The fixture order stays placed: a plausible id here is a well-formed one that does not exist.
		run(
			fc.asyncProperty(who, idSegment(() => "00000000-0000-4000-8000-000000000000"), (w, id) =>
				check("POST", `/api/orders/${id}/cancel`, { headers: auth(tokenOf(w)) }, [401, 404, 422]),
			),
		));

	it("GET /notifications", () =>
		run(
			fc.asyncProperty(who, queryOf({ page: plausible.page, pageSize: plausible.pageSize }), (w, q) =>
				check("GET", `/api/notifications${q}`, { headers: auth(tokenOf(w)) }, [200, 401, 422]),
			),
		));

	it("GET /admin/traces", () =>
		run(fc.asyncProperty(who, queryOf({ limit: plausible.pageSize }), (w, q) => check("GET", `/api/admin/traces${q}`, { headers: auth(tokenOf(w)) }, [200, 401, 403, 422]))));

	it("GET /admin/traces/:traceId", () =>
		run(
			fc.asyncProperty(who, idSegment(() => "00000000-0000-4000-8000-000000000000"), (w, id) =>
				// An empty id is the list route (200).
				check("GET", `/api/admin/traces/${id}`, { headers: auth(tokenOf(w)) }, [...(id === "" ? [200] : []), 401, 403, 404, 422]),
			),
		));

	it("GET /admin/cluster and /admin/metrics (no parameters)", () =>
		run(
			fc.asyncProperty(who, fc.constantFrom("cluster", "metrics"), queryOf({ page: plausible.page }), (w, what, q) =>
				check("GET", `/api/admin/${what}${q}`, { headers: auth(tokenOf(w)) }, [200, 401, 403, 422]),
			),
		));

	it("GET /admin/dead-letters", () =>
		run(
			fc.asyncProperty(who, queryOf({ group: fc.constantFrom("notifications", "products"), limit: plausible.pageSize }), (w, q) =>
				check("GET", `/api/admin/dead-letters${q}`, { headers: auth(tokenOf(w)) }, [200, 401, 403, 422]),
			),
		));

	it("POST /admin/dead-letters/replay", () =>
		run(
			fc.asyncProperty(who, bodyOf({ messageId: fc.uuid(), group: fc.constantFrom("notifications", "products") }), (w, body) =>
				check("POST", "/api/admin/dead-letters/replay", { body, headers: auth(tokenOf(w)) }, [200, ...BODY]),
			),
		));

	it("GET /notifications/stream with hostile queries and Authorization headers", () =>
		run(
			fc.asyncProperty(fc.oneof(who.map(tokenOf).map(auth), headerValue.map(v => ({ authorization: v }))), queryOf({ page: plausible.page }), async (headers, q) => {
				// A stream that opens never ends: read its status and headers, then hang up.
				const controller = new AbortController();
				const res = await fetch(`${base}/api/notifications/stream${q}`, { headers, signal: controller.signal });
				inputs++;
				byStatus.set(res.status, (byStatus.get(res.status) ?? 0) + 1);
				if (res.status === 200) {
					expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
					controller.abort();
					return;
				}
				const text = await res.text();
				const where = `GET /api/notifications/stream${q.slice(0, 200)} → ${res.status} ${text.slice(0, 300)}`;
				if (![401, 422, 431].includes(res.status) || LEAKS.test(text)) throw new Error(`unexpected: ${where}`);
				if (res.status !== 431) expect(JSON.parse(text)).toMatchObject({ code: res.status, type: expect.any(String), message: expect.any(String) });
			}),
		));

	it("malformed and oversized raw bodies on every body route", () =>
		run(
			fc.asyncProperty(
				fc.constantFrom(...ROUTES.filter(r => r.paramsIn === "body")),
				fc.oneof(fc.string({ unit: "binary", maxLength: 50 }), fc.constantFrom("{", '{"a":', "[".repeat(10_000), '{"items":' + "[".repeat(5000), "x".repeat(1_100_000), "\u0000", "null", "1", '"s"')),
				fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16"),
				(route, raw, type) =>
					check(route.method, `/api${route.path.replace(":id", String(productId))}`, { raw, headers: { "content-type": type, ...auth(tokens.admin) } }, [400, 404, 413, 415, 422]),
			),
		));

	it("covers every route of the contract", () => {
		// A new route without a case above fails here.
		const covered = ["users.register", "users.login", "users.me", "products.list", "products.get", "products.create", "products.update", "products.remove", "orders.create", "orders.list", "orders.get", "orders.cancel", "notifications.list", "api.traces", "api.trace", "api.adminCluster", "api.adminMetrics", "api.adminDeadLetters", "api.adminReplayDeadLetter", "api.notificationStream"];
		expect(ROUTES.map(r => r.action).sort()).toEqual(covered.sort());
	});
});
