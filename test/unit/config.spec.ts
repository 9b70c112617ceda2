/** lib/config: API.md's environment, parsed once, with its defaults and refusals. */
import path from "node:path";
import { loadConfig, maskUrl, ConfigError } from "../../lib/config";
import { createSequelize } from "../../mixins/db.mixin";

it("gives the embedded default when nothing is set", () => {
	const c = loadConfig({});
	expect(c.distributed).toBe(false);
	expect(c.transporter).toBeUndefined();
	expect(c.cacher).toBeUndefined();
	expect(c.namespace).toBe("carsi");
	expect(c.port).toBe(3000);
	expect(c.services).toEqual(["api", "users", "products", "orders", "notifications"]);
	expect(c.databaseUrls.products).toBe(`sqlite:${path.resolve("data/products.sqlite")}`);
	expect(c.jwt.generated).toBe(true);
	expect(c.jwt.secret.length).toBeGreaterThanOrEqual(32);
	expect(c.cors.origins).toBe("*");
	expect(c.dbPoolMax).toBe(10);
});

it("reads a distributed node's variables", () => {
	const c = loadConfig({
		SERVICES: "products, users",
		TRANSPORTER: "amqp://guest:guest@127.0.0.1:5672",
		CACHER: "redis://127.0.0.1:6379",
		PRODUCTS_DATABASE_URL: "postgres://postgres@127.0.0.1:5432/carsi_products",
		JWT_SECRET: "s3cret",
		METRICS_PORT: "9100",
		CORS_ORIGINS: "https://shop.example, https://admin.example",
	});
	expect(c.distributed).toBe(true);
	expect(c.services).toEqual(["products", "users"]);
	expect(c.databaseUrls.products).toBe("postgres://postgres@127.0.0.1:5432/carsi_products");
	expect(c.metricsPort).toBe(9100);
	expect(c.cors.origins).toEqual(["https://shop.example", "https://admin.example"]);
});

it("sizes each service's PostgreSQL pool with DB_POOL_MAX", () => {
	expect(loadConfig({ DB_POOL_MAX: "4" }).dbPoolMax).toBe(4);
	// What the services' adapter builds from it (no connection is opened here).
	const db = createSequelize("postgres://postgres@127.0.0.1:5432/unused", 4);
	expect((db.config as unknown as { pool: { max: number } }).pool.max).toBe(4);
	void db.close();
});

it.each([
	[{ TRANSPORTER: "amqp://x" }, /JWT_SECRET is required/],
	[{ NODE_ENV: "production" }, /JWT_SECRET is required/],
	[{ SERVICES: "products,payments" }, /unknown service "payments"/],
	[{ PORT: "eighty" }, /PORT must be an integer/],
	[{ CACHE_TTL: "0" }, /CACHE_TTL must be an integer >= 1/],
	[{ DB_POOL_MAX: "0" }, /DB_POOL_MAX must be an integer >= 1/],
])("refuses %j with one clear line", (env, message) => {
	let error: unknown;
	try {
		loadConfig(env);
	} catch (err) {
		error = err;
	}
	expect(error).toBeInstanceOf(ConfigError);
	expect((error as Error).message).toMatch(message);
	expect((error as Error).stack).not.toContain("\n");
});

it("masks the password of a database URL", () => {
	expect(maskUrl("postgres://carsi:p%40ss:word@db:5432/carsi_orders")).toBe("postgres://carsi:****@db:5432/carsi_orders");
	expect(maskUrl("postgres://postgres@127.0.0.1/x")).toBe("postgres://postgres@127.0.0.1/x");
	expect(maskUrl("sqlite:/data/users.sqlite")).toBe("sqlite:/data/users.sqlite");
});

it("sends notifications to the log unless SMTP_URL names an SMTP server", () => {
	expect(loadConfig({}).smtp).toEqual({ url: undefined, from: "Çarşı <no-reply@carsi.local>" });
	expect(loadConfig({ SMTP_URL: "smtps://u:p@mail.example:465", SMTP_FROM: "Shop <shop@example.com>" }).smtp).toEqual({
		url: "smtps://u:p@mail.example:465",
		from: "Shop <shop@example.com>",
	});
	expect(() => loadConfig({ SMTP_URL: "http://u:secret@mail.example" })).toThrow(/SMTP_URL must be an smtp:\/\/ or smtps:\/\/ URL, got "http:\/\/u:\*\*\*\*@mail.example"/);
});

it("turns the cache off with CACHER=off, and takes CHANNELS_URL for the events", () => {
	const off = loadConfig({ CACHER: "off" });
	expect(off.cacheEnabled).toBe(false);
	expect(off.cacher).toBeUndefined();
	expect(loadConfig({}).cacheEnabled).toBe(true);
	const nats = loadConfig({ TRANSPORTER: "nats://127.0.0.1:4222", JWT_SECRET: "s", CHANNELS_URL: "amqp://guest:guest@127.0.0.1:5672" });
	expect(nats.channels.amqpUrl).toBe("amqp://guest:guest@127.0.0.1:5672");
	expect(() => loadConfig({ TRANSPORTER: "nats://127.0.0.1:4222", JWT_SECRET: "s" })).toThrow(/CHANNELS_URL/);
	expect(loadConfig({ TRANSPORTER: "amqp://h", JWT_SECRET: "s" }).channels.amqpUrl).toBe("amqp://h");
});
