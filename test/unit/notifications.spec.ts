/**
 * notifications on a broker of its own (SQLite): one notification per event however often it is
 * delivered, the right user and words for each event, sent / failed / pending after a crash, the
 * caller's list; and the email channel against a local SMTP sink, with users for the address.
 * The channel handlers (lib/channels) are thin wrappers of handleEvent, tested here directly.
 */
import { randomUUID } from "node:crypto";
import type { ServiceBroker } from "moleculer";
import type { BusinessEventName, BusinessEvents, Order, OrderCreated, UserRegistered } from "../../lib/events";
import { SendError, type NotificationChannel, type Recipient } from "../../services/notifications/channels";
import { formatMoney } from "../../services/notifications/messages";
import type { NotificationsThis } from "../../services/notifications/notifications.service";
import { createNode, sqliteUrls, tempDir } from "../support/broker";
import { SmtpSink } from "../support/smtp-sink";

/** A channel that records what it was asked to send and behaves as the test says. */
class StubChannel implements NotificationChannel {
	readonly sent: Array<{ to: Recipient; subject: string; body: string }> = [];
	behaviour: () => Promise<void> = async () => undefined;
	constructor(readonly name: "log" | "email" = "log") {}
	async send(to: Recipient, subject: string, body: string): Promise<void> {
		this.sent.push({ to, subject, body });
		await this.behaviour();
	}
}

function order(userId: number, over: Partial<Order> = {}): Order {
	const now = new Date().toISOString();
	return {
		id: randomUUID(),
		userId,
		status: "placed",
		items: [{ productId: 1, sku: "TEA-RIZE-500", name: "Rize çayı 500 g", quantity: 2, unitPriceCents: 12990 }],
		totalCents: 25980,
		currency: "TRY",
		createdAt: now,
		updatedAt: now,
		...over,
	};
}
const envelope = () => ({ eventId: randomUUID(), occurredAt: new Date().toISOString() });
const orderCreated = (userId: number, over: Partial<Order> = {}): OrderCreated => ({ ...envelope(), order: order(userId, over) });
const userRegistered = (id: number, email = `user${id}@example.com`, name = "Ayşe"): UserRegistered => ({
	...envelope(),
	user: { id, email, name, role: "customer", createdAt: new Date().toISOString() },
});

describe("notifications on SQLite", () => {
	let broker: ServiceBroker;
	let tmp: ReturnType<typeof tempDir>;
	let svc: NotificationsThis;
	let channel: StubChannel;

	beforeAll(async () => {
		tmp = tempDir();
		broker = createNode({
			services: ["notifications"],
			databaseUrls: sqliteUrls(tmp.dir, ["notifications"]),
			settings: { notifications: { claimTtlMs: 400, sendTimeoutMs: 200, claimPollMs: 10 } },
		});
		await broker.start();
		svc = broker.getLocalService("notifications") as unknown as NotificationsThis;
	});

	afterAll(async () => {
		await broker.stop();
		tmp.remove();
	});

	beforeEach(() => {
		channel = new StubChannel();
		svc.deliveryChannels.log = channel;
	});

	const handle = <E extends BusinessEventName>(type: E, payload: BusinessEvents[E]) => svc.handleEvent(type, payload);
	async function rowsOf(eventId: string) {
		const [rows] = await svc.sequelize.query("SELECT * FROM notifications WHERE event_id = :eventId", { replacements: { eventId } });
		return rows as Array<Record<string, any>>;
	}

	describe("consuming events", () => {
		it("records and sends one notification for an event delivered twice", async () => {
			const event = orderCreated(7);
			const first = await handle("order.created", event);
			const second = await handle("order.created", event);
			expect(second).toEqual(first);
			expect(await rowsOf(event.eventId)).toHaveLength(1);
			expect(channel.sent).toHaveLength(1);
			expect(first).toMatchObject({ status: "sent", channel: "log", eventId: event.eventId });
		});

		it("records one row and sends once for 20 concurrent deliveries of one event", async () => {
			channel.behaviour = () => new Promise(r => setTimeout(r, 50));
			const event = orderCreated(8);
			const results = await Promise.all(Array.from({ length: 20 }, () => handle("order.created", event)));
			expect(await rowsOf(event.eventId)).toHaveLength(1);
			expect(channel.sent).toHaveLength(1);
			// Every delivery may be acknowledged: each saw the one notification, sent.
			expect(new Set(results.map(r => r.id)).size).toBe(1);
			expect(results.every(r => r.status === "sent")).toBe(true);
		});

		it("notifies the order's owner of order.created with the total from integer cents", async () => {
			const event = orderCreated(11);
			const n = await handle("order.created", event);
			expect(n).toMatchObject({ userId: 11, orderId: event.order.id, type: "order.created", eventId: event.eventId });
			expect(n.subject).toBe(`Order ${event.order.id.slice(0, 8)}… placed: 2 items, 259.80 TRY`);
			expect(n.body).toContain(event.order.id);
			expect(n.body).toContain("2 × Rize çayı 500 g: 259.80 TRY");
			expect(channel.sent[0].to).toEqual({ userId: 11, email: undefined });
		});

		it("notifies the order's owner of order.cancelled", async () => {
			const cancelled = { ...envelope(), order: order(12, { status: "cancelled", items: [{ productId: 2, sku: "S", name: "Cezve", quantity: 1, unitPriceCents: 45000 }], totalCents: 45000 }) };
			const n = await handle("order.cancelled", cancelled);
			expect(n).toMatchObject({ userId: 12, orderId: cancelled.order.id, type: "order.cancelled" });
			expect(n.subject).toBe(`Order ${cancelled.order.id.slice(0, 8)}… cancelled: 1 item, 450.00 TRY`);
		});

		it("welcomes the registered user, with no order", async () => {
			const event = userRegistered(13, "ayse@example.com", "Ayşe");
			const n = await handle("user.registered", event);
			expect(n).toMatchObject({ userId: 13, orderId: null, type: "user.registered", subject: "Welcome to Çarşı, Ayşe" });
			expect(n.body).toContain("ayse@example.com");
			expect(channel.sent[0].to).toEqual({ userId: 13, email: "ayse@example.com" });
		});

		it("answers API.md's notification shape, with ISO dates", async () => {
			const n = await handle("order.created", orderCreated(14));
			expect(Object.keys(n).sort()).toEqual(["body", "channel", "createdAt", "eventId", "id", "orderId", "sentAt", "status", "subject", "type", "userId"]);
			expect(n.id).toMatch(/^[0-9a-f-]{36}$/);
			expect(new Date(n.createdAt).toISOString()).toBe(n.createdAt);
			expect(new Date(n.sentAt!).toISOString()).toBe(n.sentAt);
		});

		it("records a permanent send failure as failed, with sentAt null, and never sends it again", async () => {
			channel.behaviour = async () => {
				throw new SendError("550 5.1.1 mailbox unavailable", true);
			};
			const event = orderCreated(15);
			const n = await handle("order.created", event);
			expect(n).toMatchObject({ status: "failed", sentAt: null });
			const [row] = await rowsOf(event.eventId);
			expect(row).toMatchObject({ status: "failed", last_error: expect.stringContaining("550") });
			channel.behaviour = async () => undefined;
			await expect(handle("order.created", event)).resolves.toMatchObject({ status: "failed" });
			expect(channel.sent).toHaveLength(1);
		});

		it("keeps a notification pending on a transient failure, asks for the event again, and sends it then", async () => {
			channel.behaviour = async () => {
				throw new Error("connect ECONNREFUSED 127.0.0.1:25");
			};
			const event = orderCreated(16);
			await expect(handle("order.created", event)).rejects.toMatchObject({ type: "EVENT_DEFERRED", retryable: true });
			expect(await rowsOf(event.eventId)).toEqual([expect.objectContaining({ status: "pending", locked_until: null })]);

			channel.behaviour = async () => undefined;
			await expect(handle("order.created", event)).resolves.toMatchObject({ status: "sent" });
			expect(channel.sent).toHaveLength(2);
			expect(await rowsOf(event.eventId)).toEqual([expect.objectContaining({ status: "sent", attempts: 2, last_error: null })]);
		});

		it("treats a send that hangs past sendTimeoutMs as transient", async () => {
			channel.behaviour = () => new Promise(() => undefined);
			const event = orderCreated(17);
			await expect(handle("order.created", event)).rejects.toMatchObject({ type: "EVENT_DEFERRED" });
			expect((await rowsOf(event.eventId))[0].status).toBe("pending");
		});

		it("sends once more a pending notification whose delivery crashed, when the event is redelivered after its claim expired", async () => {
			const event = orderCreated(18);
			// What a crash between the insert and the send leaves behind: pending, owned for a while.
			await svc.model.create({
				id: randomUUID(),
				userId: 18,
				eventId: event.eventId,
				type: "order.created",
				orderId: event.order.id,
				channel: "log",
				subject: "recorded before the crash",
				body: "b",
				status: "pending",
				attempts: 1,
				lockedUntil: new Date(Date.now() + 300),
				createdAt: new Date(),
			});
			const started = Date.now();
			const n = await handle("order.created", event);
			expect(Date.now() - started).toBeGreaterThanOrEqual(250);
			expect(n).toMatchObject({ status: "sent", subject: "recorded before the crash" });
			expect(channel.sent).toHaveLength(1);
			expect(await rowsOf(event.eventId)).toEqual([expect.objectContaining({ status: "sent", attempts: 2 })]);
		});

		it.each([
			["an eventId that is not a UUID", { ...orderCreated(1), eventId: "42" }],
			["an order without its user", { ...envelope(), order: { ...order(1), userId: undefined } }],
			["a total in floating point", { ...envelope(), order: { ...order(1), totalCents: 259.8 } }],
			["no order at all", envelope()],
		])("refuses %s with INVALID_EVENT (not retryable) and records nothing", async (_name, payload) => {
			await expect(svc.handleEvent("order.created", payload as OrderCreated)).rejects.toMatchObject({ type: "INVALID_EVENT", retryable: false });
			expect(channel.sent).toHaveLength(0);
			if (typeof (payload as { eventId?: string }).eventId === "string") expect(await rowsOf((payload as { eventId: string }).eventId)).toHaveLength(0);
		});

		it("handles an event through notifications.handle, which only this node may call", async () => {
			const event = userRegistered(19);
			await expect(broker.call("notifications.handle", { type: "user.registered", payload: event })).resolves.toMatchObject({ userId: 19, status: "sent" });
			const action = broker.registry.getActionList({}).find((a: any) => a.name === "notifications.handle") as any;
			expect(action.action.visibility).toBe("protected");
		});
	});

	describe("list", () => {
		const meta = (id: number) => ({ meta: { user: { id, role: "customer" } } });
		const list = (id: number, params: Record<string, unknown> = {}) => broker.call<any, any>("notifications.list", params, meta(id));
		const created: string[] = [];

		beforeAll(async () => {
			svc.deliveryChannels.log = new StubChannel();
			for (let i = 0; i < 25; i++) {
				const n = await handle("order.created", orderCreated(100));
				// Distinct, known times: the list's order is what is under test, not the clock.
				await svc.model.update({ createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, i)) }, { where: { id: n.id } });
				created.push(n.id);
			}
			for (let i = 0; i < 3; i++) await handle("order.created", orderCreated(200));
			// Not a notification yet: pending rows are not listed.
			svc.deliveryChannels.log = { name: "log", send: async () => Promise.reject(new Error("down")) };
			await handle("order.created", orderCreated(100)).catch(() => undefined);
		});

		it("pages the caller's notifications, newest first, in the list envelope", async () => {
			const first = await list(100, { page: 1, pageSize: 10 });
			expect(first).toMatchObject({ total: 25, page: 1, pageSize: 10, totalPages: 3 });
			expect(first.rows.map((r: any) => r.id)).toEqual(created.slice().reverse().slice(0, 10));
			const last = await list(100, { page: "3", pageSize: "10" });
			expect(last.rows.map((r: any) => r.id)).toEqual(created.slice(0, 5).reverse());
			expect((await list(100, { page: 4, pageSize: 10 })).rows).toEqual([]);
		});

		it("defaults to page 1 of 20", async () => {
			expect(await list(100)).toMatchObject({ page: 1, pageSize: 20, total: 25, totalPages: 2 });
		});

		it("never shows another user's notifications", async () => {
			const other = await list(200);
			expect(other.total).toBe(3);
			expect(other.rows.every((r: any) => r.userId === 200)).toBe(true);
			expect(await list(999)).toMatchObject({ rows: [], total: 0, totalPages: 0 });
		});

		it("refuses a pageSize over 100, a page of 0 and unknown parameters with 422", async () => {
			for (const params of [{ pageSize: 500 }, { page: 0 }, { pageSize: "abc" }, { userId: 200 }])
				await expect(list(100, params)).rejects.toMatchObject({ code: 422, type: "VALIDATION_ERROR" });
		});

		it("refuses a caller without a user with 401", async () => {
			await expect(broker.call("notifications.list", {})).rejects.toMatchObject({ code: 401, type: "UNAUTHORIZED" });
		});
	});
});

describe("formatMoney", () => {
	it.each([
		[25980, "TRY", "259.80 TRY"],
		[5, "TRY", "0.05 TRY"],
		[123456789, "TRY", "1,234,567.89 TRY"],
		[500, "JPY", "500 JPY"],
		[1234, "KWD", "1.234 KWD"],
	])("writes %i minor units of %s as %s", (cents, currency, text) => {
		expect(formatMoney(cents, currency)).toBe(text);
	});
});

describe("the email channel, against a local SMTP sink", () => {
	let broker: ServiceBroker;
	let tmp: ReturnType<typeof tempDir>;
	let sink: SmtpSink;
	let svc: NotificationsThis;

	beforeAll(async () => {
		tmp = tempDir();
		sink = await new SmtpSink().start();
		broker = createNode({
			services: ["users", "notifications"],
			databaseUrls: sqliteUrls(tmp.dir, ["users", "notifications"]),
			settings: { notifications: { smtpUrl: sink.url, smtpFrom: "Çarşı <shop@carsi.test>", sendTimeoutMs: 3000, claimTtlMs: 10_000 } },
		});
		await broker.start();
		svc = broker.getLocalService("notifications") as unknown as NotificationsThis;
	});

	afterAll(async () => {
		await broker.stop();
		await sink.stop();
		tmp.remove();
	});

	const register = async (email: string) =>
		(await broker.call<any, any>("users.register", { email, password: "password-123", name: "Mehmet" })).user as { id: number; email: string };

	it("mails an order's owner at the address users.contact gives", async () => {
		const user = await register("mehmet@example.com");
		const event = orderCreated(user.id);
		const n = await svc.handleEvent("order.created", event);
		expect(n).toMatchObject({ channel: "email", status: "sent" });
		const mail = sink.messages.find(m => m.subject === n.subject)!;
		expect(mail).toBeDefined();
		expect(mail.to).toEqual(["mehmet@example.com"]);
		expect(mail.from).toBe("shop@carsi.test");
		expect(mail.text).toContain(event.order.id);
		expect(mail.text).toContain("Total: 259.80 TRY");
	});

	it("mails a registered user at the address the event carries", async () => {
		const n = await svc.handleEvent("user.registered", userRegistered(4242, "zeynep@example.com", "Zeynep"));
		expect(n).toMatchObject({ channel: "email", status: "sent", subject: "Welcome to Çarşı, Zeynep" });
		expect(sink.messages.find(m => m.subject === "Welcome to Çarşı, Zeynep")?.to).toEqual(["zeynep@example.com"]);
	});

	it("records a 550 refusal as failed and does not retry it", async () => {
		sink.refuse.set("gone@example.com", "550 5.1.1 No such user");
		const n = await svc.handleEvent("user.registered", userRegistered(4243, "gone@example.com"));
		expect(n).toMatchObject({ channel: "email", status: "failed", sentAt: null });
	});

	it("keeps a 451 answer pending and asks for the event again", async () => {
		sink.refuse.set("later@example.com", "451 4.3.0 Try again later");
		const event = userRegistered(4244, "later@example.com");
		await expect(svc.handleEvent("user.registered", event)).rejects.toMatchObject({ type: "EVENT_DEFERRED" });
		sink.refuse.delete("later@example.com");
		await expect(svc.handleEvent("user.registered", event)).resolves.toMatchObject({ channel: "email", status: "sent" });
		expect(sink.messages.filter(m => m.to.includes("later@example.com"))).toHaveLength(1);
	});

	it("falls back to the log for a user nobody can reach (users.contact: 404)", async () => {
		const n = await svc.handleEvent("order.created", orderCreated(987654));
		expect(n).toMatchObject({ channel: "log", status: "sent" });
	});

	it("keeps the notification pending and asks for the event again while users is unreachable", async () => {
		await broker.destroyService(broker.getLocalService("users")!);
		const event = orderCreated(1);
		await expect(svc.handleEvent("order.created", event)).rejects.toMatchObject({ type: "EVENT_DEFERRED" });
		const [rows] = await svc.sequelize.query("SELECT status FROM notifications WHERE event_id = :id", { replacements: { id: event.eventId } });
		expect(rows).toEqual([{ status: "pending" }]);
	});
});
