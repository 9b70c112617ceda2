/**
 * Observability on the embedded default: the gateway's X-Request-Id, the admin trace API fed by
 * the Event exporter, JSON log lines with the requestID and without secrets, and the parsing of
 * the variables that configure them.
 */
import { Writable } from "node:stream";
import type { ServiceBroker } from "moleculer";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";
import { waitFor } from "../support/wait";
import { ConfigError, loadConfig } from "../../lib/config";
import { loggerOptions, requestIdMiddleware } from "../../lib/logging";
import { TraceStore, tracingOptions, type CollectedSpan } from "../../lib/tracing";

const ADMIN = { email: "admin@obs.local", password: "admin-password-obs" };
const lines: Array<Record<string, unknown>> = [];
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let adminToken: string;

beforeAll(async () => {
	tmp = tempDir();
	const destination = new Writable({
		write(chunk, _enc, done) {
			for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
			done();
		},
	});
	const logger = loggerOptions({ logFormat: "json", logLevel: "debug" }) as unknown as { options: { pino: Record<string, unknown> } };
	logger.options.pino.destination = destination;
	broker = createNode({
		services: ["api", "users", "products"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "products"]),
		settings: { users: { admin: ADMIN } },
		channels: false,
		broker: {
			logger: logger as never,
			tracing: tracingOptions({ enabled: true, exporter: "none", zipkinUrl: "", sample: { rate: 1 }, tracesKept: 50 }),
			middlewares: [requestIdMiddleware("debug")],
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

describe("request ids and traces", () => {
	it("answers the request's id, traces its hops, and lists it for an admin only", async () => {
		const res = await http(base, "GET", "/api/products/12345");
		expect(res.status).toBe(404);
		const id = res.headers.get("x-request-id")!;
		expect(id).toMatch(/^[0-9a-f-]{36}$/);

		let trace: { traceId: string; spans: CollectedSpan[] } | undefined;
		await waitFor("the trace to reach the collector", async () => {
			const r = await http(base, "GET", `/api/admin/traces/${id}`, { token: adminToken });
			trace = r.status === 200 ? r.body : undefined;
			return trace !== undefined && trace.spans.length === 2;
		});
		const [root, get] = trace!.spans;
		expect(root).toMatchObject({ traceId: id, parentId: null, name: "GET /api/products/12345", service: "api", nodeId: broker.nodeID });
		expect(get).toMatchObject({ traceId: id, parentId: root.id, name: "action 'products.get'", service: "products" });
		expect(get.error).toMatchObject({ name: "NotFoundError", code: 404, type: "NOT_FOUND" });
		expect(get.startTime).toBeGreaterThanOrEqual(root.startTime);

		const list = await http(base, "GET", "/api/admin/traces?limit=1", { token: adminToken });
		expect(list.body.items).toEqual([{ traceId: id, name: "GET /api/products/12345", startTime: root.startTime, duration: expect.any(Number), spans: 2 }]);
		expect((await http(base, "GET", "/api/admin/traces")).status).toBe(401);
		const customer = (await http(base, "POST", "/api/users/register", { body: { email: "c@obs.local", password: "password-123", name: "C" } })).body.token;
		expect((await http(base, "GET", "/api/admin/traces", { token: customer })).status).toBe(403);
		expect((await http(base, "GET", "/api/admin/traces/nope", { token: adminToken })).status).toBe(404);
		expect((await http(base, "GET", "/api/admin/traces?limit=0", { token: adminToken })).status).toBe(422);
	});

	it("keeps a client's well-formed X-Request-Id, replaces another, and traces no probe", async () => {
		const kept = await http(base, "GET", "/api/products", { headers: { "x-request-id": "client-req-0001" } });
		expect(kept.headers.get("x-request-id")).toBe("client-req-0001");
		const replaced = await http(base, "GET", "/api/products", { headers: { "x-request-id": "bad id; <script>" } });
		expect(replaced.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
		const probe = await http(base, "GET", "/ready");
		await waitFor("the list's trace", async () => (await http(base, "GET", "/api/admin/traces/client-req-0001", { token: adminToken })).status === 200);
		await new Promise(r => setTimeout(r, 1200)); // one more flush of the exporter
		expect((await http(base, "GET", `/api/admin/traces/${probe.headers.get("x-request-id")}`, { token: adminToken })).status).toBe(404);
	});
});

describe("JSON logs", () => {
	it("puts the requestID on every line of a request's handling and never a password or token", async () => {
		const res = await http(base, "POST", "/api/users/login", { body: { email: ADMIN.email, password: ADMIN.password } });
		const id = res.headers.get("x-request-id");
		const own = lines.filter(l => l.requestID === id);
		expect(own.map(l => l.msg)).toEqual(expect.arrayContaining(["action api.rest started", "action users.login started", expect.stringMatching(/^action users\.login finished in/)]));
		expect(own.every(l => l.level === "debug" && typeof l.time === "string" && l.nodeID === broker.nodeID)).toBe(true);

		broker.getLogger("test").info("Connecting with", { password: "hunter2", nested: { token: "t0ken", authorization: "Bearer x" } });
		const text = JSON.stringify(lines);
		expect(text).not.toContain(ADMIN.password);
		expect(text).not.toContain(res.body.token);
		expect(text).not.toContain("hunter2");
		expect(text).not.toContain("t0ken");
		expect(lines.at(-1)).toMatchObject({ msg: "Connecting with", data: { password: "[redacted]", nested: { token: "[redacted]", authorization: "[redacted]" } } });
	});

	it("writes an error's stack as err", () => {
		broker.getLogger("test").error("It failed:", new Error("boom"));
		expect(lines.at(-1)).toMatchObject({ level: "error", msg: "It failed:", err: { type: "Error", message: "boom", stack: expect.stringContaining("Error: boom") } });
	});
});

describe("configuration", () => {
	it("reads LOG_FORMAT, TRACING, TRACING_SAMPLE and TRACING_EXPORTER", () => {
		expect(loadConfig({}).logFormat).toBe("pretty");
		expect(loadConfig({ NODE_ENV: "production", JWT_SECRET: "s" }).logFormat).toBe("json");
		expect(loadConfig({}).tracing).toMatchObject({ enabled: true, exporter: "none", sample: { perSecond: 20 } });
		expect(loadConfig({ TRACING: "off" }).tracing.enabled).toBe(false);
		expect(loadConfig({ TRACING_SAMPLE: "0.25" }).tracing.sample).toEqual({ rate: 0.25 });
		expect(loadConfig({ TRACING_SAMPLE: "5/s" }).tracing.sample).toEqual({ perSecond: 5 });
		expect(loadConfig({ TRACING_EXPORTER: "Zipkin" }).tracing.exporter).toBe("zipkin");
		for (const [name, value] of [["TRACING_SAMPLE", "2"], ["TRACING_SAMPLE", "0/s"], ["TRACING_SAMPLE", "often"], ["TRACING_EXPORTER", "jaeger"], ["LOG_FORMAT", "xml"], ["TRACING", "yes"]])
			expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`^${name} must`));
		expect(() => loadConfig({ TRACING_SAMPLE: "2" })).toThrow(ConfigError);
	});
});

describe("TraceStore", () => {
	const span = (traceId: string, id: string, parentId: string | null, startTime: number, name = id): CollectedSpan => ({
		id,
		parentId,
		traceId,
		name,
		service: "s",
		nodeId: "n",
		startTime,
		finishTime: startTime + 10,
		duration: 10,
	});

	it("lists the newest first by their root, keeps the last ones, and ignores repeated spans", () => {
		const store = new TraceStore(2);
		store.add([span("t1", "b", "a", 101), span("t1", "a", null, 100, "GET /x")]);
		store.add([span("t2", "c", null, 200, "POST /y"), span("t2", "c", null, 200, "POST /y")]);
		expect(store.list(10)).toEqual([
			{ traceId: "t2", name: "POST /y", startTime: 200, duration: 10, spans: 1 },
			{ traceId: "t1", name: "GET /x", startTime: 100, duration: 11, spans: 2 },
		]);
		expect(store.get("t1")!.spans.map(s => s.id)).toEqual(["a", "b"]);
		store.add([span("t3", "d", null, 300)]);
		expect(store.get("t1")).toBeNull();
		expect(store.list(1).map(t => t.traceId)).toEqual(["t3"]);
	});

	it("puts a caller before the calls it made in the same millisecond, whatever order they finished in", () => {
		const store = new TraceStore(5);
		// Finished children first, as the exporter sends them; all started at the same millisecond.
		store.add([span("t", "grandchild", "child", 100), span("t", "child", "root", 100), span("t", "sibling", "root", 101), span("t", "root", null, 100)]);
		expect(store.get("t")!.spans.map(s => s.id)).toEqual(["root", "child", "grandchild", "sibling"]);
	});
});
