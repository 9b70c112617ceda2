/**
 * Checks deployment/rabbitmq/definitions.json against a real RabbitMQ without touching its existing
 * vhosts: validate.sh imports the file's policies into a throwaway vhost (the vhost given as
 * argv[2]) with `rabbitmqctl import_definitions`; this script then declares the app's business
 * queues there exactly as lib/channels does (lib/channels/names.ts: quorum queues with their own
 * arguments), checks that RabbitMQ accepts them, and that a message requeued past the policy's
 * delivery limit lands in its group's DLQ instead of being lost.
 *   npx ts-node --transpile-only deployment/check-rabbitmq.ts <vhost> [amqp-url-without-vhost]
 */
import amqp from "amqplib";
import { CONSUMER_GROUPS } from "../lib/events";
import { QUORUM_QUEUE, RETRY_QUEUE, channelName, dlqName, mainQueueName, mainQueueOptions, retryName } from "../lib/channels/names";
import definitions from "./rabbitmq/definitions.json";

const PREFIX = "carsi"; // the default NAMESPACE, which the policies' patterns name

async function main(): Promise<void> {
	const [vhost, base = "amqp://guest:guest@127.0.0.1:5672"] = process.argv.slice(2);
	if (!vhost || vhost === "/") throw new Error("a throwaway vhost is required");
	const conn = await amqp.connect(`${base}/${encodeURIComponent(vhost)}`);
	const ch = await conn.createChannel();
	const queues: string[] = [];
	for (const [event, groups] of Object.entries(CONSUMER_GROUPS)) {
		const exchange = channelName(PREFIX, event);
		await ch.assertExchange(exchange, "fanout", { durable: true });
		for (const group of groups) {
			const main = mainQueueName(group, exchange);
			await ch.assertQueue(main, mainQueueOptions(group, PREFIX));
			await ch.bindQueue(main, exchange, "");
			await ch.assertQueue(retryName(group, PREFIX), RETRY_QUEUE);
			await ch.assertQueue(dlqName(group, PREFIX), QUORUM_QUEUE);
			queues.push(main);
		}
	}
	// Every main queue must be matched by a policy of the file; the retry and dead-letter queues by none.
	const patterns = definitions.policies.map(p => new RegExp(p.pattern));
	for (const q of queues) if (!patterns.some(re => re.test(q))) throw new Error(`no policy matches ${q}`);
	for (const group of new Set(Object.values(CONSUMER_GROUPS).flat()))
		for (const q of [retryName(group, PREFIX), dlqName(group, PREFIX)])
			if (patterns.some(re => re.test(q))) throw new Error(`a policy matches ${q}, which the app declares with its own arguments`);

	// A message that is never settled (requeued each time) ends in its group's DLQ.
	const limit = Math.max(...definitions.policies.map(p => Number((p.definition as Record<string, unknown>)["delivery-limit"] ?? 0)));
	const [group] = CONSUMER_GROUPS["order.created"];
	const exchange = channelName(PREFIX, "order.created");
	ch.publish(exchange, "", Buffer.from("{}"), { persistent: true });
	let deliveries = 0;
	await ch.consume(mainQueueName(group, exchange), msg => {
		if (!msg) return;
		deliveries++;
		ch.nack(msg, false, true);
	});
	const deadline = Date.now() + 10_000;
	let dead = 0;
	while (Date.now() < deadline && dead === 0) {
		await new Promise(r => setTimeout(r, 200));
		dead = (await ch.checkQueue(dlqName(group, PREFIX))).messageCount;
	}
	await conn.close();
	if (dead !== 1) throw new Error(`after ${deliveries} deliveries the message is not in ${dlqName(group, PREFIX)}`);
	console.log(
		`SUCCESS: ${queues.length} business queues declared as the app declares them; a message requeued ${deliveries} times (delivery-limit ${limit}) went to ${dlqName(group, PREFIX)}`,
	);
}

main().catch(err => {
	console.error(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
	process.exit(1);
});
