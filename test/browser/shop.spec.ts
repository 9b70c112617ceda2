/// <reference lib="dom" />
// (The functions given to page.evaluate run in the browser.)
/**
 * The storefront and the console in a real browser (Chromium through playwright-core), against
 * the whole system on the embedded default started in this process: every service, SQLite files
 * in a temporary directory, the Memory cacher, business events in process. What a person does
 * with the pages, and what the API then holds.
 */
import { randomUUID } from "node:crypto";
import type { Middleware, ServiceBroker } from "moleculer";
import { Tracing as ChannelsTracing } from "@moleculer/channels";
import { tracingOptions } from "../../lib/tracing";
import { getConfig } from "../../lib/config";
import type { Page, Request } from "playwright-core";
import { createNode, gatewayUrl, sqliteUrls, tempDir } from "../support/broker";
import { http, login } from "../support/http";
import { ARTIFACTS, launchBrowser, screenshot, type Browser } from "../support/browser";
import { waitFor } from "../support/wait";

const SERVICES = ["api", "users", "products", "orders", "notifications"];
const ADMIN = { email: "admin@shop.test", password: "admin-password-1" };
/** How long a page may take to show what the system did: generous, it bounds a wait and measures nothing. */
const SHOWS_WITHIN = { timeout: 15_000 };

let broker: ServiceBroker;
let base: string;
let tmp: ReturnType<typeof tempDir>;
let browser: Browser;
let adminToken: string;
const products: Record<string, { id: number; priceCents: number; stock: number }> = {};

async function createProduct(sku: string, name: string, priceCents: number, stock: number) {
	const res = await http(base, "POST", "/api/products", {
		token: adminToken,
		body: { sku, name, description: `${name}, from the browser suite`, category: "kitchen", priceCents, stock },
	});
	expect(res.status).toBe(201);
	products[sku] = res.body;
}

async function customer(name: string) {
	const email = `${name.toLowerCase()}-${Date.now()}@shop.test`;
	const res = await http(base, "POST", "/api/users/register", { body: { email, password: "password-123", name } });
	expect(res.status).toBe(201);
	return res.body as { token: string; user: { id: number; email: string; role: string } };
}

async function ordersOf(token: string) {
	const res = await http(base, "GET", "/api/orders?pageSize=100", { token });
	expect(res.status).toBe(200);
	return res.body as { total: number; rows: Array<{ id: string; items: Array<{ productId: number; quantity: number }> }> };
}

/** Adds a product to the cart from its page and opens the cart. */
async function cartWith(page: Page, sku: string, quantity: number) {
	await page.goto(`${base}/#/products/${products[sku].id}`);
	await page.getByLabel("Quantity").fill(String(quantity));
	await page.getByRole("button", { name: "Add to cart" }).click();
	await page.getByRole("link", { name: /^Cart/ }).click();
	await page.getByRole("heading", { name: "Cart" }).waitFor();
}

beforeAll(async () => {
	tmp = tempDir();
	broker = createNode({
		services: SERVICES,
		databaseUrls: sqliteUrls(tmp.dir, SERVICES.filter(s => s !== "api")),
		settings: { users: { admin: ADMIN, outboxPollMs: 100 }, orders: { outboxPollMs: 100 } },
		// As `npm start` has them: the carsi.* metrics and tracing into the gateway's collector.
		broker: {
			metrics: { enabled: true },
			tracing: tracingOptions({ ...getConfig().tracing, enabled: true, exporter: "none" }),
		},
		middlewares: [ChannelsTracing() as unknown as Middleware],
	});
	await broker.start();
	base = gatewayUrl(broker);
	adminToken = await login(base, ADMIN.email, ADMIN.password);
	await createProduct("CEZVE-1", "Bakır cezve", 45_000, 10);
	await createProduct("TEA-1", "Rize çayı 500 g", 12_990, 50);
	await createProduct("LOKUM-1", "Gül lokumu", 8_950, 40);
	browser = await launchBrowser();
	// eslint-disable-next-line no-console
	console.log(`browser suite: screenshots in ${ARTIFACTS}`);
});

afterAll(async () => {
	await browser?.close();
	await broker?.stop();
	tmp?.remove();
});

it("lets a new user register, find a product, order two, and see the order and then its notification without a reload", async () => {
	const { page, errors } = await browser.visitor();
	await page.goto(`${base}/`);
	await page.getByRole("heading", { name: "Catalog" }).waitFor();
	await screenshot(page, "01-catalog");

	await page.getByRole("link", { name: "Register" }).click();
	// The contract's field errors, next to the fields.
	await page.getByLabel("Name").fill("Ayşe");
	await page.getByLabel("Email").fill("not-an-email");
	await page.getByLabel(/^Password/).fill("short");
	await page.getByRole("button", { name: "Create account" }).click();
	await expect(page.locator("#email-error").textContent()).resolves.toMatch(/email/i);
	await expect(page.locator("#password-error").textContent()).resolves.toMatch(/8/);
	await screenshot(page, "02-register-errors");
	const email = `ayse-${Date.now()}@shop.test`;
	await page.getByLabel("Email").fill(email);
	await page.getByLabel(/^Password/).fill("password-123");
	await page.getByRole("button", { name: "Create account" }).click();
	await page.getByRole("button", { name: "Log out" }).waitFor();

	await page.getByLabel("Search products").fill("cezve");
	await page.getByRole("button", { name: "Search" }).click();
	await page.getByText("1 product matching “cezve”").waitFor();
	await page.getByRole("link", { name: "Bakır cezve" }).click();
	await page.getByRole("heading", { name: "Bakır cezve" }).waitFor();
	await expect(page.getByTestId("x-cache").textContent()).resolves.toMatch(/X-Cache: (HIT|MISS)/);
	await screenshot(page, "03-product");
	await page.getByLabel("Quantity").fill("2");
	await page.getByRole("button", { name: "Add to cart" }).click();
	await page.getByRole("link", { name: "Cart (2)" }).click();
	await screenshot(page, "04-cart");

	// From here on, nothing may reload the page: the notification has to come over the stream.
	await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));
	await page.getByRole("button", { name: "Place order" }).click();
	await page.getByRole("heading", { name: "My orders" }).waitFor();
	const order = page.locator("li.order").first();
	await order.getByText("2 × Bakır cezve").waitFor();
	await page.getByTestId("toast").getByText(/placed/).waitFor(SHOWS_WITHIN);
	await screenshot(page, "05-orders-with-notification");
	await page.getByRole("navigation", { name: "Shop" }).getByRole("link", { name: /^Notifications/ }).click();
	await page.locator('li.notification[data-type="order.created"]').waitFor(SHOWS_WITHIN);
	await screenshot(page, "06-notifications");
	expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);

	const token = await page.evaluate(() => JSON.parse(localStorage.getItem("carsi.auth")!).token as string);
	const mine = await ordersOf(token);
	expect(mine.total).toBe(1);
	expect(mine.rows[0].items).toEqual([expect.objectContaining({ productId: products["CEZVE-1"].id, quantity: 2 })]);
	expect((await http(base, "GET", `/api/products/${products["CEZVE-1"].id}`)).body.stock).toBe(8);
	expect(errors).toEqual([]);
});

it("places one order when 'Place order' is double-clicked", async () => {
	const me = await customer("Deniz");
	const { page, errors } = await browser.visitor(me);
	await cartWith(page, "TEA-1", 3);
	const posts: Request[] = [];
	page.on("request", r => r.method() === "POST" && r.url().endsWith("/api/orders") && posts.push(r));
	await page.getByRole("button", { name: "Place order" }).dblclick();
	await page.getByRole("heading", { name: "My orders" }).waitFor();
	await Promise.all(posts.map(r => r.response()));

	expect(posts.length).toBeGreaterThanOrEqual(1);
	const keys = new Set(posts.map(r => r.headers()["idempotency-key"]));
	expect(keys.size).toBe(1);
	expect([...keys][0]).toMatch(/^[0-9a-f]{32}$/);
	expect((await ordersOf(me.token)).total).toBe(1);
	expect(errors).toEqual([]);
});

it("places one order when the answer to 'Place order' was lost and the user clicks again", async () => {
	const me = await customer("Emre");
	const { page, errors } = await browser.visitor(me);
	await cartWith(page, "LOKUM-1", 2);
	const keys: string[] = [];
	// The first submission reaches the shop, which places the order, but its answer never arrives.
	let lose = true;
	await page.route("**/api/orders", async route => {
		keys.push(route.request().headers()["idempotency-key"]);
		if (!lose) return route.continue();
		lose = false;
		const answered = await route.fetch();
		expect(answered.status()).toBe(201);
		await route.abort("connectionreset");
	});
	await page.getByRole("button", { name: "Place order" }).click();
	await page.getByRole("alert").getByText(/cannot be reached/).waitFor();
	expect((await ordersOf(me.token)).total).toBe(1);

	await page.getByRole("button", { name: "Place order" }).click();
	await page.getByRole("heading", { name: "My orders" }).waitFor();
	expect(keys).toHaveLength(2);
	expect(keys[1]).toBe(keys[0]);
	const mine = await ordersOf(me.token);
	expect(mine.total).toBe(1);
	expect(mine.rows[0].items).toEqual([expect.objectContaining({ productId: products["LOKUM-1"].id, quantity: 2 })]);
	expect(errors).toEqual([]);
});

it("shows 'out of stock' on the cart line that caused it", async () => {
	const me = await customer("Can");
	const { page, errors } = await browser.visitor(me);
	await cartWith(page, "TEA-1", 1);
	await page.getByLabel("Quantity of Rize çayı 500 g").fill("5000");
	await page.getByRole("button", { name: "Place order" }).click();
	const line = page.locator(`tr[data-product="${products["TEA-1"].id}"]`);
	await line.getByText(/Out of stock/).waitFor();
	expect(await line.getByLabel("Quantity of Rize çayı 500 g").getAttribute("aria-invalid")).toBe("true");
	expect((await ordersOf(me.token)).total).toBe(0);
	await screenshot(page, "07-cart-out-of-stock");
	expect(errors).toEqual([]);
});

/** Presses Tab until the focused element has this accessible text (at most 60 times); fails otherwise. */
async function tabTo(page: Page, text: string) {
	for (let i = 0; i < 60; i++) {
		await page.keyboard.press("Tab");
		const focused = await page.evaluate(() => {
			const el = document.activeElement as HTMLElement | null;
			return el ? (el.getAttribute("aria-label") ?? el.textContent ?? "").trim() : "";
		});
		if (focused === text) return;
	}
	throw new Error(`Tab never reached "${text}"`);
}

it("can be used with the keyboard alone, with the focus visible", async () => {
	const me = await customer("Mert");
	const { page, errors } = await browser.visitor(me);
	await page.goto(`${base}/`);
	await page.getByRole("heading", { name: "Catalog" }).waitFor();
	await tabTo(page, "Add Gül lokumu to the cart");
	expect(await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle)).not.toBe("none");
	await page.keyboard.press("Enter");
	await page.getByText("Gül lokumu added to the cart.").waitFor();
	await tabTo(page, "Cart (1)");
	await page.keyboard.press("Enter");
	await page.getByRole("heading", { name: "Cart" }).waitFor();
	await tabTo(page, "Place order");
	await page.keyboard.press("Enter");
	await page.getByRole("heading", { name: "My orders" }).waitFor();
	const mine = await ordersOf(me.token);
	expect(mine.rows.map(o => o.items)).toEqual([[expect.objectContaining({ productId: products["LOKUM-1"].id, quantity: 1 })]]);
	expect(errors).toEqual([]);
});

it("is readable on a phone: no page is wider than a 360 px screen", async () => {
	const me = await customer("Ece");
	const { page, errors } = await browser.visitor(me);
	await page.setViewportSize({ width: 360, height: 740 });
	await cartWith(page, "CEZVE-1", 1);
	for (const [hash, name] of [["#/", "catalog"], [`#/products/${products["TEA-1"].id}`, "product"], ["#/cart", "cart"], ["#/orders", "orders"]] as const) {
		await page.goto(`${base}/${hash}`);
		await page.locator("main h1").waitFor();
		const width = await page.evaluate(() => document.documentElement.scrollWidth);
		expect({ name, width }).toEqual({ name, width: 360 });
		await screenshot(page, `11-phone-${name}`);
	}
	expect(errors).toEqual([]);
});

it("shows a price an admin changed in the console on the storefront at once", async () => {
	const id = products["CEZVE-1"].id;
	const shopper = await browser.visitor();
	await shopper.page.goto(`${base}/#/products/${id}`);
	const price = shopper.page.getByTestId("price");
	await expect(price.textContent()).resolves.toContain("450,00");
	// A second read comes from the cache: the old price is cached now.
	await shopper.page.getByRole("button", { name: "Read again" }).click();
	await shopper.page.getByTestId("x-cache").getByText("X-Cache: HIT").waitFor();
	await shopper.page.getByRole("button", { name: "Add to cart" }).click();

	const admin = await browser.visitor();
	await admin.page.goto(`${base}/console`);
	await admin.page.getByLabel("Email").fill(ADMIN.email);
	await admin.page.getByLabel("Password").fill(ADMIN.password);
	await admin.page.getByRole("button", { name: "Log in" }).click();
	await admin.page.getByRole("heading", { name: "Nodes and services" }).waitFor();
	await admin.page.locator("tr[data-node] .services").getByText("orders").waitFor();
	await admin.page.getByLabel("Price of Bakır cezve (TRY)").fill("399.90");
	await admin.page.getByRole("button", { name: "Save Bakır cezve" }).click();
	// The console shows the cache at work: the first read after the change is a MISS, the next a HIT.
	const probe = admin.page.locator(`tr[data-product="${id}"] .cache-probe`);
	await probe.waitFor();
	await expect(probe.textContent()).resolves.toMatch(/MISS\s*₺399,90\s*then\s*HIT\s*₺399,90/);
	await screenshot(admin.page, "08-console");

	await shopper.page.getByRole("button", { name: "Read again" }).click();
	await shopper.page.getByTestId("price").getByText("399,90").waitFor();
	await screenshot(shopper.page, "09-product-new-price");
	// A cart filled before the change shows the new price too.
	await shopper.page.getByRole("link", { name: /^Cart/ }).click();
	await shopper.page.locator(`tr[data-product="${id}"] td[data-label="Unit price"]`).getByText("399,90").waitFor();
	expect(shopper.errors).toEqual([]);
	expect(admin.errors).toEqual([]);
});

it("lists a dead letter in the console and replays it from there", async () => {
	// An event no consumer can ever handle (its user has no id) goes to the dead letters.
	const poison = { eventId: randomUUID(), occurredAt: new Date().toISOString(), user: { email: "x@shop.test", name: "X" } };
	await broker.sendToChannel("user.registered", poison, { messageId: poison.eventId });
	await waitFor("the poison event to be dead-lettered", async () => {
		const res = await http(base, "GET", "/api/admin/dead-letters", { token: adminToken });
		return res.body.items.some((d: { messageId: string }) => d.messageId === poison.eventId);
	});

	const me = await http(base, "GET", "/api/users/me", { token: adminToken });
	const { page, errors } = await browser.visitor({ token: adminToken, user: me.body });
	await page.goto(`${base}/console`);
	const row = page.locator("tr", { hasText: poison.eventId });
	await row.waitFor();
	expect(await row.textContent()).toContain("notifications");
	await row.getByRole("button", { name: /^Replay user.registered/ }).click();
	// Handled again and refused again: the console says so, and the dead letter stays for a fix.
	await page.getByRole("status").getByText(/Replayed 0, failed 1/).waitFor();
	const after = await http(base, "GET", "/api/admin/dead-letters", { token: adminToken });
	expect(after.body.items.filter((d: { messageId: string }) => d.messageId === poison.eventId)).toHaveLength(1);
	expect(errors).toEqual([]);
});

it("shows an order's path through the services and the metrics in the console", async () => {
	const me = await customer("Arda");
	const placed = await http(base, "POST", "/api/orders", { token: me.token, body: { items: [{ productId: products["TEA-1"].id, quantity: 1 }] } });
	expect(placed.status).toBe(201);
	const traceId = placed.headers.get("x-request-id")!;

	const admin = await http(base, "GET", "/api/users/me", { token: adminToken });
	const { page, errors } = await browser.visitor({ token: adminToken, user: admin.body });
	await page.goto(`${base}/console#trace=${traceId}`);
	const timeline = page.locator("ol.timeline");
	// HTTP → orders → products.reserve → outbox → the event's consumers, filling in as the spans arrive.
	// (The channel's prefix is the broker's namespace: `carsi` under npm start, a unique one here.)
	const consumed = /^channel '.+\.order\.created'$/;
	const path = [/^POST \/api\/orders$/, /^action 'orders\.create'$/, /^action 'products\.reserve'$/, /^outbox publish 'order\.created'$/, consumed];
	for (const name of path) await timeline.locator("strong", { hasText: name }).first().waitFor(SHOWS_WITHIN);
	const names = await timeline.locator("li strong").allTextContents();
	// In call order: each span after its parent, so the publish comes before its consumers.
	expect(names[0]).toBe("POST /api/orders");
	expect(names.indexOf("outbox publish 'order.created'")).toBeLessThan(names.findIndex(n => consumed.test(n)));
	const notificationsSpan = timeline.locator("li").filter({ has: page.locator("strong", { hasText: consumed }) }).filter({ hasText: "notifications on" });
	await notificationsSpan.waitFor(SHOWS_WITHIN);

	const tile = (label: string) => page.locator(".tile", { hasText: label }).locator(".value");
	await page.waitForFunction(() => !/^–$/.test(document.querySelector(".tile .value")?.textContent ?? "–"), undefined, SHOWS_WITHIN);
	expect(Number(await tile("Orders placed").textContent())).toBeGreaterThanOrEqual(1);
	expect(await tile("Cache hit ratio").textContent()).toMatch(/^\d+\.\d%$/);
	await screenshot(page, "12-console-order-path");
	expect(errors).toEqual([]);
});

it("shows a customer 'forbidden' at /console, and the console's data endpoints answer 403", async () => {
	const me = await customer("Selin");
	const { page, errors } = await browser.visitor(me);
	const adminCalls: number[] = [];
	page.on("response", r => r.url().includes("/api/admin/") && adminCalls.push(r.status()));
	await page.goto(`${base}/console`);
	await page.getByRole("heading", { name: "Forbidden" }).waitFor();
	expect(await page.getByRole("heading", { name: "Nodes and services" }).count()).toBe(0);
	await screenshot(page, "10-console-forbidden");
	expect(adminCalls).toEqual([]);

	for (const path of ["/api/admin/cluster", "/api/admin/metrics", "/api/admin/dead-letters"]) {
		const res = await http(base, "GET", path, { token: me.token });
		expect({ path, status: res.status, type: res.body.type }).toEqual({ path, status: 403, type: "FORBIDDEN" });
	}
	const replay = await http(base, "POST", "/api/admin/dead-letters/replay", { token: me.token, body: { messageId: "x" } });
	expect(replay.status).toBe(403);
	expect(errors).toEqual([]);
});
