/**
 * Publish throughput of the confirming AMQP adapter (lib/channels/amqp-adapter.ts) on RabbitMQ:
 * every publish persistent, mandatory and confirmed into a quorum queue, awaited one at a time,
 * then with N publishes in flight (what the outbox relay does with a batch).
 *
 *   npx ts-node --transpile-only bench/channels-publish.ts [oneByOne=1000] [concurrent=10000] [inFlight=100]
 *
 * Uses TEST_AMQP_URL or amqp://guest:guest@127.0.0.1:5672; deletes its exchange and queue at the end.
 */
import { randomBytes } from "node:crypto";
import amqp from "amqplib";
import { ServiceBroker } from "moleculer";
import { buildChannelsMiddleware } from "../lib/channels";
import type { ConfirmingAmqpAdapter } from "../lib/channels/amqp-adapter";

const url = process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const [oneByOne, concurrent, inFlight] = [1000, 10_000, 100].map((d, i) => Number(process.argv[2 + i] ?? d));

async function main(): Promise<void> {
	const ns = `bench_${randomBytes(4).toString("hex")}`;
	const broker = new ServiceBroker({
		logger: false,
		namespace: ns,
		metrics: { enabled: false },
		middlewares: [
			buildChannelsMiddleware({ amqpUrl: url, namespace: ns, maxRetries: 3, retryDelayMs: 1000, dataDir: "/tmp", consumerGroups: { "bench.event": ["bench"] }, dlqService: false }),
		],
	});
	await broker.start();
	const payload = (i: number) => ({ eventId: `${ns}-${i}`, occurredAt: new Date().toISOString(), order: { id: `o-${i}`, totalCents: 12990, items: [{ sku: "TEA-RIZE-500", quantity: 2 }] } });
	try {
		await broker.sendToChannel("bench.event", payload(-1)); // declarations out of the measure

		let t = process.hrtime.bigint();
		for (let i = 0; i < oneByOne; i++) await broker.sendToChannel("bench.event", payload(i), { messageId: `${ns}-${i}` });
		const seq = Number(process.hrtime.bigint() - t) / 1e9;

		t = process.hrtime.bigint();
		let next = 0;
		await Promise.all(
			Array.from({ length: inFlight }, async () => {
				while (next < concurrent) {
					const i = oneByOne + next++;
					await broker.sendToChannel("bench.event", payload(i), { messageId: `${ns}-${i}` });
				}
			}),
		);
		const par = Number(process.hrtime.bigint() - t) / 1e9;

		console.log(`one by one:      ${oneByOne} confirmed in ${seq.toFixed(2)} s = ${Math.round(oneByOne / seq)} msg/s`);
		console.log(`${inFlight} in flight:  ${concurrent} confirmed in ${par.toFixed(2)} s = ${Math.round(concurrent / par)} msg/s`);
	} finally {
		const names = (broker.channelAdapter as ConfirmingAmqpAdapter).declaredNames;
		await broker.stop();
		const conn = await amqp.connect(url);
		const ch = await conn.createChannel();
		for (const q of names.queues) await ch.deleteQueue(q);
		for (const x of names.exchanges) await ch.deleteExchange(x);
		await conn.close();
	}
}

main().catch(err => {
	console.error(err);
	process.exit(1);
});
