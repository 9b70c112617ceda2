/**
 * CPU per order in one process, no HTTP: users, products, orders and notifications on SQLite files
 * in a temp dir (the embedded default), `orders.create` called N times, C at a time. Prints the CPU
 * milliseconds per order up to the commit, then until every order's notification is stored. The
 * HTTP bench (`npm run bench -- --scenarios order`) says how fast; this says where to look, and
 * runs under `node --cpu-prof -r ts-node/register/transpile-only` for a profile (the TypeScript
 * compile shows at start-up; read the hot path below it).
 *
 *   N=200 C=1 npx ts-node --transpile-only bench/order-cpu.ts
 */
import { createNode, tempDir } from "../test/support/broker";
import { waitFor } from "../test/support/wait";

async function main(): Promise<void> {
	const dir = tempDir();
	const urls = Object.fromEntries(["users", "products", "orders", "notifications"].map(s => [s, `sqlite:${dir.dir}/${s}.sqlite`]));
	const b = createNode({ services: ["users", "products", "orders", "notifications"], databaseUrls: urls, cacher: "Memory", broker: { logger: { type: "Console", options: { level: "error" } } } });
	await b.start();
	try {
		const reg = await b.call<{ user: { id: number } }, object>("users.register", { email: "cpu@example.com", password: "password-123", name: "CPU" });
		const meta = { user: { id: reg.user.id, role: "customer" } };
		const ids: number[] = [];
		for (let i = 0; i < 100; i++) ids.push((await b.call<{ id: number }, object>("products.create", { sku: `CPU-${i}`, name: "Cezve", category: "copper", priceCents: 100, stock: 1_000_000 })).id);
		const n = Number(process.env.N ?? 200);
		const c = Number(process.env.C ?? 1);
		const cpu0 = process.cpuUsage();
		const t0 = Date.now();
		for (let i = 0; i < n; i += c) await Promise.all(Array.from({ length: c }, (_, j) => b.call("orders.create", { items: [{ productId: ids[(i + j) % ids.length], quantity: 1 }] }, { meta })));
		const cpu1 = process.cpuUsage(cpu0);
		console.log(`C=${c}: ${n} orders in ${Date.now() - t0} ms, ${((cpu1.user + cpu1.system) / n / 1000).toFixed(1)} ms CPU per order up to its commit`);
		const cpu2 = process.cpuUsage();
		await waitFor("every order's notification", async () => (await b.call<{ total: number }, object>("notifications.list", { pageSize: 1 }, { meta })).total >= n + 1, 120_000, 200);
		const cpu3 = process.cpuUsage(cpu2);
		console.log(`then ${((cpu3.user + cpu3.system) / n / 1000).toFixed(1)} ms CPU per order until all are notified`);
	} finally {
		await b.stop();
		dir.remove();
	}
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
