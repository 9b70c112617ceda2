/**
 * The gateway's sharp edges: exact CORS origins (moleculer-web matches a string as a substring),
 * X-Forwarded-For trusted only behind a configured proxy, and the rate limit per IP.
 */
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http } from "../support/http";

let tmp: ReturnType<typeof tempDir>;
const brokers: ServiceBroker[] = [];

async function gateway(api: Record<string, unknown>): Promise<string> {
	const broker = createNode({ services: ["api", "users"], databaseUrls: sqliteUrls(tmp.dir, ["users"]), settings: { api } });
	brokers.push(broker);
	await broker.start();
	return gatewayUrl(broker);
}

beforeAll(() => (tmp = tempDir()));
afterAll(async () => {
	await Promise.all(brokers.map(b => b.stop()));
	tmp.remove();
});

describe("CORS with configured origins", () => {
	let base: string;
	beforeAll(async () => (base = await gateway({ corsOrigins: ["https://shop.example"] })));

	it("allows an exact origin, with a preflight for the headers a client sends", async () => {
		const pre = await http(base, "OPTIONS", "/api/products", {
			headers: { origin: "https://shop.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
		});
		expect(pre.status).toBe(204);
		expect(pre.headers.get("access-control-allow-origin")).toBe("https://shop.example");
		expect(pre.headers.get("access-control-allow-headers")).toMatch(/Authorization/);
	});

	it.each(["https://shop.example.evil.com", "https://shop.exampl", "http://shop.example"])("refuses the look-alike origin %s", async origin => {
		const res = await http(base, "GET", "/api/users/me", { headers: { origin } });
		expect(res.headers.get("access-control-allow-origin")).toBeNull();
		expect(res.status).toBe(403);
	});
});

describe("login rate limit per IP", () => {
	it("ignores X-Forwarded-For unless a proxy is trusted", async () => {
		const base = await gateway({ loginRateLimit: { windowMs: 60_000, perIp: 2, perEmail: 100 }, trustProxy: 0 });
		const statuses: number[] = [];
		for (let i = 0; i < 3; i++) {
			const res = await http(base, "POST", "/api/users/login", {
				body: { email: `spoof${i}@example.com`, password: "whatever-1" },
				headers: { "x-forwarded-for": `10.0.0.${i}` },
			});
			statuses.push(res.status);
		}
		expect(statuses).toEqual([401, 401, 429]);
	});

	it("keys on the client address the trusted proxy appended", async () => {
		const base = await gateway({ loginRateLimit: { windowMs: 60_000, perIp: 2, perEmail: 100 }, trustProxy: 1 });
		const attempt = (xff: string, i: number) =>
			http(base, "POST", "/api/users/login", { body: { email: `p${xff}${i}@example.com`, password: "whatever-1" }, headers: { "x-forwarded-for": xff } });
		// A client cannot escape its own limit by prepending addresses: the proxy's entry is the last.
		expect((await attempt("1.1.1.1, 203.0.113.7", 1)).status).toBe(401);
		expect((await attempt("2.2.2.2, 203.0.113.7", 2)).status).toBe(401);
		expect((await attempt("3.3.3.3, 203.0.113.7", 3)).status).toBe(429);
		// Another client behind the same proxy has its own count.
		expect((await attempt("203.0.113.8", 4)).status).toBe(401);
	});
});

describe("a routed service that no node runs", () => {
	it("answers 503 SERVICE_UNAVAILABLE and /ready says which", async () => {
		const base = await gateway({});
		const res = await http(base, "GET", "/api/products/1");
		expect(res.status).toBe(503);
		expect(res.body).toMatchObject({ code: 503, type: "SERVICE_UNAVAILABLE" });
		const ready = await http(base, "GET", "/ready");
		expect(ready.status).toBe(503);
		expect(ready.body.checks).toMatchObject({ "service:users": "up", "service:products": "down" });
	});
});
