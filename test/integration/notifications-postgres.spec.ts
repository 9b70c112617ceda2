/**
 * notifications on real PostgreSQL: two nodes of the service share one database (as two consumers
 * of the `notifications` group do), and concurrent deliveries of the same events, split across
 * them, record and send each notification once. The guarantee is the database's unique index.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { OrderCreated } from "../../lib/events";
import type { NotificationChannel, Recipient } from "../../services/notifications/channels";
import type { NotificationsThis } from "../../services/notifications/notifications.service";
import { createNode, uniqueId } from "../support/broker";
import { TestDatabases, pgQuery } from "../support/pg";
import { requireServers } from "../support/servers";

const dbs = new TestDatabases(["notifications"] as const);
const nodes: ServiceBroker[] = [];
const services: NotificationsThis[] = [];
/** Every send of both nodes, by event. */
const sends: string[] = [];
let serversUp = false;

class CountingChannel implements NotificationChannel {
	readonly name = "log" as const;
	async send(_to: Recipient, _subject: string, body: string): Promise<void> {
		// A send that takes a while, so duplicates really arrive while the first is in flight.
		await new Promise(r => setTimeout(r, 20));
		sends.push(body);
	}
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
			items: [{ productId: 1, sku: "LOKUM-1", name: "Lokum", quantity: 3, unitPriceCents: 9990 }],
			totalCents: 29970,
			currency: "TRY",
			createdAt: now,
			updatedAt: now,
		},
	};
}

beforeAll(async () => {
	await requireServers("postgres");
	serversUp = true;
	await dbs.create();
	for (let i = 0; i < 2; i++) {
		const broker = createNode({
			services: ["notifications"],
			namespace: uniqueId("notif"),
			databaseUrls: dbs.urls,
			settings: { notifications: { claimTtlMs: 5000, sendTimeoutMs: 2000, claimPollMs: 10 } },
		});
		nodes.push(broker);
	}
	// Both start together on the fresh database: the migration runs once (advisory lock).
	await Promise.all(nodes.map(n => n.start()));
	for (const broker of nodes) {
		const svc = broker.getLocalService("notifications") as unknown as NotificationsThis;
		svc.deliveryChannels.log = new CountingChannel();
		services.push(svc);
	}
});

afterAll(async () => {
	if (!serversUp) return; // nothing was created
	await Promise.all(nodes.map(n => n.stop().catch(() => undefined)));
	await dbs.drop();
});

it("has the unique index on event_id that the consumer relies on", async () => {
	const indexes = await pgQuery<{ indexdef: string }>(dbs.names.notifications, "SELECT indexdef FROM pg_indexes WHERE indexname = 'notifications_event_id_unique'");
	expect(indexes).toEqual([{ indexdef: expect.stringMatching(/CREATE UNIQUE INDEX .* \(event_id\)/) }]);
});

it("records and sends one notification for 40 concurrent deliveries of one event across two nodes", async () => {
	const event = orderCreated(1);
	sends.length = 0;
	const results = await Promise.all(Array.from({ length: 40 }, (_, i) => services[i % 2].handleEvent("order.created", event)));
	expect(new Set(results.map(r => r.id)).size).toBe(1);
	expect(results.every(r => r.status === "sent")).toBe(true);
	const rows = await pgQuery(dbs.names.notifications, "SELECT status, attempts FROM notifications WHERE event_id = $1", [event.eventId]);
	expect(rows).toEqual([{ status: "sent", attempts: 1 }]);
	expect(sends).toHaveLength(1);
});

it("records and sends each of 50 events once when each arrives three times at once", async () => {
	const events = Array.from({ length: 50 }, (_, i) => orderCreated(100 + (i % 5)));
	sends.length = 0;
	await Promise.all(events.flatMap((event, i) => [0, 1, 2].map(k => services[(i + k) % 2].handleEvent("order.created", event))));
	const [{ n }] = await pgQuery<{ n: string }>(
		dbs.names.notifications,
		"SELECT count(*) AS n FROM notifications WHERE event_id = ANY($1::uuid[]) AND status = 'sent'",
		[events.map(e => e.eventId)],
	);
	expect(Number(n)).toBe(50);
	expect(sends).toHaveLength(50);
	expect(new Set(sends).size).toBe(50);
});

it("lets one of 10 racing redeliveries take over a crashed delivery's pending notification, and sends it once", async () => {
	const event = orderCreated(2);
	// What a node that died between the insert and the send leaves: pending, its claim run out.
	await pgQuery(
		dbs.names.notifications,
		`INSERT INTO notifications (id, user_id, event_id, type, order_id, channel, subject, body, status, attempts, locked_until, created_at)
		 VALUES ($1, 2, $2, 'order.created', $3, 'log', 'recorded before the crash', 'b', 'pending', 1, now() - interval '1 second', now())`,
		[randomUUID(), event.eventId, event.order.id],
	);
	sends.length = 0;
	const results = await Promise.all(Array.from({ length: 10 }, (_, i) => services[i % 2].handleEvent("order.created", event)));
	expect(results.every(r => r.status === "sent" && r.subject === "recorded before the crash")).toBe(true);
	expect(sends).toHaveLength(1);
	expect(await pgQuery(dbs.names.notifications, "SELECT status, attempts FROM notifications WHERE event_id = $1", [event.eventId])).toEqual([
		{ status: "sent", attempts: 2 },
	]);
});

it("refuses a second row for an event even to a plain INSERT (the database, not the service, decides)", async () => {
	const [row] = await pgQuery<{ event_id: string }>(dbs.names.notifications, "SELECT event_id FROM notifications LIMIT 1");
	await expect(
		pgQuery(
			dbs.names.notifications,
			`INSERT INTO notifications (id, user_id, event_id, type, channel, subject, body, status, attempts, created_at)
			 VALUES ($1, 1, $2, 'order.created', 'log', 's', 'b', 'sent', 1, now())`,
			[randomUUID(), row.event_id],
		),
	).rejects.toMatchObject({ code: "23505" });
});

it("lists a user's notifications newest first on PostgreSQL too", async () => {
	const list = await nodes[0].call<{ rows: Array<{ createdAt: string; userId: number }>; total: number }, object>(
		"notifications.list",
		{ pageSize: 100 },
		{ meta: { user: { id: 100, role: "customer" } } },
	);
	expect(list.total).toBe(10);
	expect(list.rows.every(r => r.userId === 100)).toBe(true);
	const times = list.rows.map(r => Date.parse(r.createdAt));
	expect(times).toEqual([...times].sort((a, b) => b - a));
});
