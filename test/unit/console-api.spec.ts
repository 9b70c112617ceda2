/**
 * What the pages need from the gateway, over HTTP on the embedded default: the static pages and
 * their policy, the notification stream (SSE, bearer token), and the console's admin endpoints
 * with their validation and access rules.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { OrderCreated } from "../../lib/events";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";

const ADMIN = { email: "admin@console.test", password: "admin-password-1" };
let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let adminToken: string;
const alice = { id: 0, token: "" };
const bob = { id: 0, token: "" };

async function register(email: string) {
	const res = await http(base, "POST", "/api/users/register", { body: { email, password: "password-123", name: "Test" } });
	expect(res.status).toBe(201);
	return { id: res.body.user.id as number, token: res.body.token as string };
}

function orderCreated(userId: number): OrderCreated {
	const now = new Date().toISOString();
	return {
		eventId: randomUUID(),
		occurredAt: now,
		order: {
			id: randomUUID(),
			userId,
			status: "placed",
			items: [{ productId: 1, sku: "CEZVE-1", name: "Bakır cezve", quantity: 1, unitPriceCents: 45000 }],
			totalCents: 45000,
			currency: "TRY",
			createdAt: now,
			updatedAt: now,
		},
	};
}

/** An open stream: its frames as they arrive, and a way to wait for the next event of a type. */
async function openStream(token: string) {
	const controller = new AbortController();
	const res = await fetch(`${base}/api/notifications/stream`, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal });
	const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
	let buffer = "";
	async function nextFrame(): Promise<string> {
		for (;;) {
			const end = buffer.indexOf("\n\n");
			if (end >= 0) {
				const frame = buffer.slice(0, end);
				buffer = buffer.slice(end + 2);
				return frame;
			}
			const { value, done } = await reader.read();
			if (done) throw new Error("the stream ended");
			buffer += value;
		}
	}
	return {
		res,
		nextFrame,
		async nextEvent(type: string): Promise<Record<string, unknown>> {
			for (;;) {
				const frame = await nextFrame();
				if (frame.split("\n").includes(`event: ${type}`)) {
					const data = frame.split("\n").find(l => l.startsWith("data: "))!;
					return JSON.parse(data.slice("data: ".length));
				}
			}
		},
		close: () => controller.abort(),
	};
}

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: ["api", "users", "notifications"],
		databaseUrls: sqliteUrls(tmp.dir, ["users", "notifications"]),
		settings: { users: { admin: ADMIN } },
	});
	await broker.start();
	base = gatewayUrl(broker);
	adminToken = await login(base, ADMIN.email, ADMIN.password);
	Object.assign(alice, await register("alice@console.test"));
	Object.assign(bob, await register("bob@console.test"));
});

afterAll(async () => {
	// A stream left open must not hold the gateway's stop (its server waits for open responses).
	const open = await openStream(alice.token);
	await open.nextFrame();
	await broker.stop();
	tmp.remove();
});

describe("the pages", () => {
	it("serves the storefront at / and the console at /console under a policy without inline script or style", async () => {
		for (const path of ["/", "/console"]) {
			const res = await fetch(base + path);
			expect(res.status).toBe(200);
			expect(res.headers.get("content-type")).toMatch(/^text\/html/);
			const csp = res.headers.get("content-security-policy")!;
			expect(csp).toContain("script-src 'self'");
			expect(csp).toContain("frame-ancestors 'none'");
			expect(csp).not.toContain("unsafe-inline");
			expect(await res.text()).toMatch(/<script type="module" src="\/js\/(shop|console)\.js"><\/script>/);
		}
	});

	it("serves Preact + htm from the installed package as one ES module", async () => {
		const res = await fetch(`${base}/vendor/preact-htm.js`);
		expect(res.status).toBe(200);
		expect(res.headers.get("content-type")).toMatch(/^text\/javascript/);
		expect(await res.text()).toMatch(/export\{.*\bas html\b.*\bas render\b/s);
	});

	it("keeps the JSON API under default-src 'none'", async () => {
		const res = await fetch(`${base}/api/products`);
		expect(res.headers.get("content-security-policy")).toBe("default-src 'none'; frame-ancestors 'none'");
	});
});

describe("GET /api/notifications/stream", () => {
	it("answers 401 without a token", async () => {
		const res = await http(base, "GET", "/api/notifications/stream");
		expect(res.status).toBe(401);
		expect(res.body).toMatchObject({ type: "UNAUTHORIZED" });
	});

	it("pushes the caller's stored notifications as they are stored, and no one else's", async () => {
		const stream = await openStream(alice.token);
		try {
			expect(stream.res.status).toBe(200);
			expect(stream.res.headers.get("content-type")).toMatch(/^text\/event-stream/);
			expect(await stream.nextFrame()).toContain("retry: ");
			// Bob's first: if it reached Alice's stream, it would be the first event she reads.
			await broker.call("notifications.handle", { type: "order.created", payload: orderCreated(bob.id) });
			const mine = orderCreated(alice.id);
			await broker.call("notifications.handle", { type: "order.created", payload: mine });
			const pushed = await stream.nextEvent("notification");
			expect(pushed).toMatchObject({ userId: alice.id, eventId: mine.eventId, type: "order.created", status: "sent", orderId: mine.order.id });
			// What the stream pushed is what the list holds.
			const list = await http(base, "GET", "/api/notifications", { token: alice.token });
			expect(list.body.rows).toContainEqual(pushed);
		} finally {
			stream.close();
		}
	});

	it("pushes to every open stream of the user", async () => {
		const [a, b] = await Promise.all([openStream(alice.token), openStream(alice.token)]);
		try {
			const event = orderCreated(alice.id);
			await broker.call("notifications.handle", { type: "order.created", payload: event });
			const [fromA, fromB] = await Promise.all([a.nextEvent("notification"), b.nextEvent("notification")]);
			expect(fromA.eventId).toBe(event.eventId);
			expect(fromB.eventId).toBe(event.eventId);
		} finally {
			a.close();
			b.close();
		}
	});
});

describe("the console's endpoints", () => {
	const reads = ["/api/admin/cluster", "/api/admin/metrics", "/api/admin/dead-letters"];

	it("answer 401 without a token and 403 to a customer", async () => {
		for (const path of reads) {
			expect((await http(base, "GET", path)).status).toBe(401);
			const res = await http(base, "GET", path, { token: alice.token });
			expect({ path, status: res.status, type: res.body.type }).toEqual({ path, status: 403, type: "FORBIDDEN" });
		}
		const replay = await http(base, "POST", "/api/admin/dead-letters/replay", { token: alice.token, body: { messageId: "m" } });
		expect(replay.status).toBe(403);
	});

	it("list the nodes with their ids and services", async () => {
		const res = await http(base, "GET", "/api/admin/cluster", { token: adminToken });
		expect(res.status).toBe(200);
		expect(res.body.nodes).toEqual([
			expect.objectContaining({ id: broker.nodeID, available: true, local: true, services: expect.arrayContaining(["api", "users", "notifications", "$node"]) }),
		]);
	});

	it("report the metrics of every node, null where none is reported", async () => {
		// These brokers run with metrics off: the node answers, and every total says "not reported".
		const res = await http(base, "GET", "/api/admin/metrics", { token: adminToken });
		expect(res.status).toBe(200);
		expect(res.body.nodes).toEqual([expect.objectContaining({ nodeID: broker.nodeID, metrics: [] })]);
		expect(Object.values(res.body.totals).every(v => v === null)).toBe(true);
	});

	it("list dead letters and validate their query and the replay body with the field at fault", async () => {
		const list = await http(base, "GET", "/api/admin/dead-letters?group=notifications&limit=10", { token: adminToken });
		expect(list.status).toBe(200);
		expect(list.body).toEqual({ items: [] });
		const bad = await http(base, "GET", "/api/admin/dead-letters?limit=abc&colour=red", { token: adminToken });
		expect(bad.status).toBe(422);
		expect(bad.body.data.map((d: { field: string }) => d.field)).toEqual(["limit", "colour"]);
		const noId = await http(base, "POST", "/api/admin/dead-letters/replay", { token: adminToken, body: {} });
		expect(noId.status).toBe(422);
		expect(noId.body.data).toEqual([expect.objectContaining({ field: "messageId" })]);
		const none = await http(base, "POST", "/api/admin/dead-letters/replay", { token: adminToken, body: { messageId: randomUUID() } });
		expect(none.status).toBe(200);
		expect(none.body).toEqual({ replayed: [], failed: [] });
	});

	it("are in the OpenAPI document, admin-only ones under the bearer scheme", async () => {
		const doc = (await http(base, "GET", "/api/openapi.json")).body;
		expect(doc.paths["/api/notifications/stream"].get.responses["200"].content).toHaveProperty(["text/event-stream"]);
		for (const path of ["/api/admin/cluster", "/api/admin/metrics", "/api/admin/dead-letters"]) expect(doc.paths[path].get.security).toEqual([{ bearer: [] }]);
		const replay = doc.paths["/api/admin/dead-letters/replay"].post;
		expect(replay.requestBody.content["application/json"].schema).toMatchObject({ required: ["messageId"], additionalProperties: false });
		expect(doc.paths["/api/admin/dead-letters"].get.parameters.map((p: { name: string }) => p.name)).toEqual(["group", "limit"]);
	});
});
