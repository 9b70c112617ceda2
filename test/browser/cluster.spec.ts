/// <reference lib="dom" />
// (The functions given to page.evaluate run in the browser.)
/**
 * The pages on the distributed topology: two gateways and one node per service, brokers in this
 * process that meet only over RabbitMQ, on PostgreSQL and a shared Redis cacher. A notification
 * stored on the notifications node reaches a page open on either gateway, and the console lists
 * every node by its id.
 */
import type { ServiceBroker } from "moleculer";
import { buildCacher } from "../../lib/cacher";
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
import { TestDatabases } from "../support/pg";
import { cachePrefix, deleteKeysWithPrefix } from "../support/redis";
import { SERVERS, requireServers } from "../support/servers";
import { waitFor } from "../support/wait";
import { launchBrowser, screenshot, type Browser } from "../support/browser";

const ADMIN = { email: "admin@cluster.test", password: "admin-password-1" };
const namespace = uniqueId("web");
const dbs = new TestDatabases(["users", "products", "orders", "notifications"] as const);
const amqpResources: AmqpResources = { queues: new Set(), exchanges: new Set() };
const NODES = ["api-a", "api-b", "users", "products", "orders", "notifications"] as const;
const brokers = new Map<string, ServiceBroker>();
let browser: Browser | undefined;
let serversUp = false;
let gatewayA: string;
let gatewayB: string;

function node(name: (typeof NODES)[number]): ServiceBroker {
	const broker = createNode({
		services: [name.startsWith("api") ? "api" : name],
		namespace,
		nodeID: `${namespace}-${name}`,
		transporter: amqpTransporter(),
		cacher: buildCacher({ cacher: SERVERS.redis, cacheTtlSeconds: 300, namespace }),
		databaseUrls: dbs.urls,
		settings: { users: { admin: ADMIN, outboxPollMs: 100 }, orders: { outboxPollMs: 100 } },
	});
	recordAmqpResources(broker, amqpResources);
	brokers.set(name, broker);
	return broker;
}

beforeAll(async () => {
	await requireServers("postgres", "redis", "rabbitmq");
	serversUp = true;
	await dbs.create();
	for (const name of NODES) node(name);
	await Promise.all([...brokers.values()].map(b => b.start()));
	for (const name of ["api-a", "api-b"]) await brokers.get(name)!.waitForServices(["users", "products", "orders", "notifications"], 30_000);
	gatewayA = gatewayUrl(brokers.get("api-a")!);
	gatewayB = gatewayUrl(brokers.get("api-b")!);
	for (const base of [gatewayA, gatewayB]) await waitFor(`${base}/ready`, async () => (await http(base, "GET", "/ready")).status === 200);
	browser = await launchBrowser();
}, 90_000);

afterAll(async () => {
	await browser?.close();
	if (!serversUp) return;
	await Promise.all(["api-a", "api-b"].map(n => brokers.get(n)?.stop()));
	await Promise.all(["users", "products", "orders", "notifications"].map(n => brokers.get(n)?.stop()));
	await deleteAmqpResources(amqpResources, namespace);
	await deleteChannelsAmqpResources(channelsAmqpResources(namespace, CONSUMER_GROUPS), namespace);
	await deleteKeysWithPrefix(cachePrefix(namespace));
	await dbs.drop();
});

it("shows a page on one gateway the notification of an order placed through the other", async () => {
	const admin = await login(gatewayA, ADMIN.email, ADMIN.password);
	const product = await http(gatewayA, "POST", "/api/products", {
		token: admin,
		body: { sku: "KILIM-1", name: "Kilim", category: "home", priceCents: 189_000, stock: 5 },
	});
	expect(product.status).toBe(201);
	const reg = await http(gatewayA, "POST", "/api/users/register", { body: { email: "nur@cluster.test", password: "password-123", name: "Nur" } });
	expect(reg.status).toBe(201);

	// The user's notifications page is open on gateway B...
	const { page, errors } = await browser!.visitor(reg.body);
	await page.goto(`${gatewayB}/#/notifications`);
	await page.getByText("(live)").waitFor();
	await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));

	// ...while the order goes through gateway A, as from another device.
	const order = await http(gatewayA, "POST", "/api/orders", { token: reg.body.token, body: { items: [{ productId: product.body.id, quantity: 1 }] } });
	expect(order.status).toBe(201);
	const item = page.locator('li.notification[data-type="order.created"]');
	await item.waitFor({ timeout: 15_000 });
	expect(await item.textContent()).toContain(order.body.id.slice(0, 8));
	expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
	await screenshot(page, "cluster-01-notification-across-gateways");
	expect(errors).toEqual([]);
});

it("lists every node of the cluster by its id, with its services, in the console", async () => {
	const token = await login(gatewayB, ADMIN.email, ADMIN.password);
	const me = await http(gatewayB, "GET", "/api/users/me", { token });
	const { page, errors } = await browser!.visitor({ token, user: me.body });
	await page.goto(`${gatewayB}/console`);
	await page.getByRole("heading", { name: "Nodes and services" }).waitFor();
	for (const name of NODES) {
		const row = page.locator(`tr[data-node="${namespace}-${name}"]`);
		await row.waitFor();
		const services = await row.locator(".services li").allTextContents();
		expect(services).toContain(name.startsWith("api") ? "api" : name);
	}
	expect(await page.locator(`tr[data-node="${namespace}-api-b"]`).textContent()).toContain("(this gateway)");
	await screenshot(page, "cluster-02-console");
	expect(errors).toEqual([]);
});
