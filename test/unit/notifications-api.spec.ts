/**
 * GET /api/notifications through the gateway (api, users and notifications on SQLite): a token is
 * required, the caller sees only their own notifications, and the query is validated like every
 * other list's.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { OrderCreated } from "../../lib/events";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http } from "../support/http";

let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
const alice = { id: 0, token: "" };
const bob = { id: 0, token: "" };
const aliceEvents: string[] = [];

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

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({ services: ["api", "users", "notifications"], databaseUrls: sqliteUrls(tmp.dir, ["users", "notifications"]) });
	await broker.start();
	base = gatewayUrl(broker);
	Object.assign(alice, await register("alice@example.com"));
	Object.assign(bob, await register("bob@example.com"));
	for (let i = 0; i < 3; i++) {
		const event = orderCreated(alice.id);
		await broker.call("notifications.handle", { type: "order.created", payload: event });
		aliceEvents.push(event.eventId);
	}
	await broker.call("notifications.handle", { type: "order.created", payload: orderCreated(bob.id) });
});

afterAll(async () => {
	await broker.stop();
	tmp.remove();
});

it("answers 401 without a token", async () => {
	const res = await http(base, "GET", "/api/notifications");
	expect(res.status).toBe(401);
	expect(res.body).toMatchObject({ code: 401, type: "UNAUTHORIZED" });
});

it("answers the caller's notifications only, newest first, as API.md's notification", async () => {
	const res = await http(base, "GET", "/api/notifications?page=1&pageSize=50", { token: alice.token });
	expect(res.status).toBe(200);
	expect(res.body).toMatchObject({ page: 1, pageSize: 50, totalPages: 1 });
	const rows = res.body.rows as Array<Record<string, unknown>>;
	expect(rows.every(r => r.userId === alice.id)).toBe(true);
	// Other events (user.registered, once lib/channels delivers them) may be there too; these must be.
	expect(rows.map(r => r.eventId)).toEqual(expect.arrayContaining(aliceEvents));
	const times = rows.map(r => Date.parse(r.createdAt as string));
	expect(times).toEqual([...times].sort((a, b) => b - a));
	expect(rows.find(r => r.eventId === aliceEvents[2])).toEqual({
		id: expect.stringMatching(/^[0-9a-f-]{36}$/),
		userId: alice.id,
		eventId: aliceEvents[2],
		type: "order.created",
		orderId: expect.stringMatching(/^[0-9a-f-]{36}$/),
		channel: "log",
		subject: expect.any(String),
		body: expect.any(String),
		status: "sent",
		createdAt: expect.any(String),
		sentAt: expect.any(String),
	});

	const other = await http(base, "GET", "/api/notifications", { token: bob.token });
	expect(other.status).toBe(200);
	expect(other.body.rows.length).toBeGreaterThanOrEqual(1);
	expect(other.body.rows.every((r: { userId: number }) => r.userId === bob.id)).toBe(true);
});

it("answers 422 VALIDATION_ERROR for pageSize=500 and for an unknown parameter", async () => {
	const big = await http(base, "GET", "/api/notifications?pageSize=500", { token: alice.token });
	expect(big.status).toBe(422);
	expect(big.body).toMatchObject({ type: "VALIDATION_ERROR", data: [expect.objectContaining({ field: "pageSize" })] });

	const unknown = await http(base, "GET", `/api/notifications?userId=${bob.id}`, { token: alice.token });
	expect(unknown.status).toBe(422);
	expect(unknown.body.data).toContainEqual({ field: "userId", message: "Unknown field 'userId'" });
});

it("is in the OpenAPI document with the Notification schema", async () => {
	const doc = (await http(base, "GET", "/api/openapi.json")).body;
	expect(doc.paths["/api/notifications"].get.security).toEqual([{ bearer: [] }]);
	expect(doc.components.schemas.NotificationList.properties.rows.items).toEqual({ $ref: "#/components/schemas/Notification" });
});
