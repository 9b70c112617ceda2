/**
 * RabbitMQ cut for 10 s during order load. Three nodes as in the distributed mode (gateway and
 * users; products and orders; notifications), whose AMQP transporter and business events both go
 * through one TCP proxy in front of RabbitMQ. While it is cut, every order answers 201 (taken) or
 * 503 (not taken) and none waits past the request timeout; once RabbitMQ is back, every order
 * taken, including the refused ones a client retried with their Idempotency-Key, has exactly one
 * notification, and the stock is conserved.
 */
import type { ServiceBroker } from "moleculer";
import brokerConfig from "../../moleculer.config";
import { CONSUMER_GROUPS } from "../../lib/events";
import {
	amqpTransporter,
	channelsAmqpResources,
	deleteAmqpResources,
	deleteChannelsAmqpResources,
	recordAmqpResources,
	type AmqpResources,
} from "../support/amqp";
import { createNode, gatewayUrl, uniqueId } from "../support/broker";
import { http, login } from "../support/http";
import { TestDatabases, pgQuery } from "../support/pg";
import { SERVERS, requireServers } from "../support/servers";
import { TcpProxy } from "../support/tcp-proxy";
import { sleep, waitFor } from "../support/wait";
import { Tally, duplicateKeyOrders, halfWrittenOrders, load, notificationViolations, stockViolations, summary } from "../support/faults";

const ADMIN = { email: "admin@faults-amqp.test", password: "admin-password-1" };
const REQUEST_TIMEOUT_MS = 10_000;
const namespace = uniqueId("fa");
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
const resources: AmqpResources = { queues: new Set(), exchanges: new Set() };
let proxy: TcpProxy | undefined;
let nodes: ServiceBroker[] = [];
let base: string;
let serversUp = false;

beforeAll(async () => {
	await requireServers("postgres", "rabbitmq");
	serversUp = true;
	await dbs.create();
	const target = new URL(SERVERS.rabbitmq);
	proxy = await TcpProxy.start({ host: target.hostname, port: Number(target.port || 5672) });
	const viaProxy = `amqp://${target.username}:${target.password}@127.0.0.1:${proxy.port}`;
	const tx = amqpTransporter();
	const node = (services: string[], settings: Record<string, Record<string, unknown>> = {}) =>
		createNode({
			services,
			namespace,
			databaseUrls: dbs.urls,
			transporter: { ...tx, options: { ...tx.options, url: viaProxy } },
			channels: { amqpUrl: viaProxy },
			settings,
			// What a node of the distributed mode runs with: the retry policy, the heartbeat, the registry.
			broker: {
				requestTimeout: REQUEST_TIMEOUT_MS,
				retryPolicy: brokerConfig.retryPolicy,
				heartbeatInterval: brokerConfig.heartbeatInterval,
				heartbeatTimeout: brokerConfig.heartbeatTimeout,
				registry: brokerConfig.registry,
			},
		});
	nodes = [
		node(["api", "users"], { users: { admin: ADMIN, outboxPollMs: 200, outboxHandoffMs: 1000 } }),
		node(["products", "orders"], { orders: { outboxPollMs: 200, outboxHandoffMs: 1000 }, products: { reservationTtlMs: 3000, reservationSweepMs: 300, reservationGraceMs: 500 } }),
		node(["notifications"]),
	];
	for (const n of nodes) recordAmqpResources(n, resources);
	await Promise.all(nodes.map(n => n.start()));
	base = gatewayUrl(nodes[0]);
	await waitFor("the gateway to be ready", async () => (await http(base, "GET", "/ready")).status === 200, 30_000);
}, 60_000);

afterAll(async () => {
	if (!serversUp) return;
	proxy?.restore();
	await Promise.all(nodes.map(n => n.stop()));
	await proxy?.close();
	await deleteAmqpResources(resources, namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await dbs.drop();
}, 60_000);

it("answers orders 201 or 503 within the request timeout while RabbitMQ is cut, and delivers every taken order's event after", async () => {
	const admin = await login(base, ADMIN.email, ADMIN.password);
	const initial = new Map<number, number>();
	for (let i = 0; i < 2; i++) {
		const res = await http(base, "POST", "/api/products", { token: admin, body: { sku: `FA-${i}`, name: `Lokum ${i}`, category: "fa", priceCents: 300, stock: 5000 } });
		expect(res.status).toBe(201);
		initial.set(res.body.id, 5000);
	}
	const ids = [...initial.keys()];
	const customer = (await http(base, "POST", "/api/users/register", { body: { email: "fa@example.com", password: "password-123", name: "FA" } })).body.token;

	const tally = new Tally();
	const refused: Array<{ key: string; body: unknown }> = [];
	const unexpected: string[] = [];
	const orders = load(4, async (w, i) => {
		const key = `fa-${w}-${i}`;
		const body = { items: [{ productId: ids[i % 2], quantity: 1 }] };
		const res = await tally.send(base, "POST", "/api/orders", { token: customer, body, headers: { "idempotency-key": key } });
		if (res.status === 503) {
			refused.push({ key, body });
			await sleep(100);
		} else if (res.status !== 201) unexpected.push(`${res.status} ${res.text.slice(0, 200)}`);
		await sleep(20);
	});
	await sleep(2000);
	const beforeCut = tally.requests;
	proxy!.cut();
	await sleep(10_000);
	const duringCut = tally.requests - beforeCut;
	proxy!.restore();
	await waitFor("the gateway to be ready again", async () => (await http(base, "GET", "/ready")).status === 200, 30_000);
	await sleep(1000);
	await orders.stop();

	// The clients retry what was refused with the same key and body: 201, or 200 where it was taken.
	const retried = new Tally();
	for (const r of refused) {
		const res = await retried.send(base, "POST", "/api/orders", { token: customer, body: r.body, headers: { "idempotency-key": r.key } });
		if (res.status !== 201 && res.status !== 200) unexpected.push(`retry of ${r.key}: ${res.status} ${res.text.slice(0, 200)}`);
	}

	const placed = (await pgQuery<{ id: string }>(dbs.names.orders, "SELECT id FROM orders")).map(r => r.id);
	let missing: string[] = [];
	await waitFor(
		"a notification for every order",
		async () => (missing = await notificationViolations(dbs.names.notifications, placed)).length === 0,
		30_000,
	).catch(() => undefined);
	let stock: string[] = [];
	await waitFor("the stock to settle", async () => (stock = await stockViolations(dbs.names.products, dbs.names.orders, initial)).length === 0, 15_000).catch(
		() => undefined,
	);
	const halves = await halfWrittenOrders(dbs.names.orders);
	const dupes = await duplicateKeyOrders(dbs.names.orders);
	const limit = REQUEST_TIMEOUT_MS + 2000;
	summary("RabbitMQ cut for 10 s during order load", tally, {
		"only 201 and 503": unexpected.length === 0 && tally.statuses().every(s => s === 201 || s === 503),
		[`no answer later than the ${REQUEST_TIMEOUT_MS} ms request timeout (+2 s)`]: tally.slowestMs <= limit,
		[`${placed.length} orders, each exactly one notification after the broker returned`]: missing.length === 0,
		[`${refused.length} refused retried with their key (${retried.describe()}), no duplicate`]: dupes.length === 0,
		"no half-written order": halves.length === 0,
		"stock conserved": stock.length === 0,
	});
	expect(unexpected).toEqual([]);
	expect(duringCut).toBeGreaterThan(0);
	expect(tally.slowestMs).toBeLessThanOrEqual(limit);
	expect(missing).toEqual([]);
	expect(dupes).toEqual([]);
	expect(halves).toEqual([]);
	expect(stock).toEqual([]);
	expect(placed.length).toBe((tally.byStatus.get(201) ?? 0) + refused.length);
}, 120_000);
