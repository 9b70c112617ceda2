/**
 * RabbitMQ resources of a test run. Moleculer's AMQP transporter declares per-node queues (which
 * expire with `autoDeleteQueues`), per-action request queues `MOL-<ns>.REQB.<action>` (which never
 * expire) and fanout exchanges (never deleted): the suite records what each broker declared and
 * deletes it with amqplib once the brokers have stopped. The durable channels (lib/channels) name
 * theirs after the namespace too (`<group>.<ns>.<event>`, `<ns>.<event>`): see the helpers at the end.
 */
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
import { channelName, dlqName, mainQueueName, retryName } from "../../lib/channels/names";
import { SERVERS } from "./servers";

export interface AmqpResources {
	queues: Set<string>;
	exchanges: Set<string>;
}

interface RecordingChannel {
	assertQueue(name: string, ...rest: unknown[]): Promise<unknown>;
	assertExchange(name: string, ...rest: unknown[]): Promise<unknown>;
	__carsiRecorded?: boolean;
}

interface AmqpTransporterLike {
	channel?: RecordingChannel;
	[method: string]: unknown;
}

/** The transporter options of the distributed mode (moleculer.config.ts), with queues expiring after 10 s. */
export function amqpTransporter() {
	return {
		type: "AMQP",
		options: {
			url: SERVERS.rabbitmq,
			prefetch: 100,
			socketOptions: { noDelay: true },
			autoDeleteQueues: 10_000,
		},
	};
}

/**
 * Records every queue and exchange `broker`'s AMQP transporter declares into `into`. Call it after
 * the broker is created and before it starts: the transporter declares them in its subscribe methods.
 */
export function recordAmqpResources(broker: ServiceBroker, into: AmqpResources): void {
	const tx = (broker.transit as unknown as { tx?: AmqpTransporterLike } | undefined)?.tx;
	if (!tx) throw new Error("recordAmqpResources: the broker has no transporter");
	const wrapChannel = () => {
		const ch = tx.channel;
		if (!ch || ch.__carsiRecorded) return;
		const assertQueue = ch.assertQueue.bind(ch);
		const assertExchange = ch.assertExchange.bind(ch);
		ch.assertQueue = (name, ...rest) => {
			into.queues.add(name);
			return assertQueue(name, ...rest);
		};
		ch.assertExchange = (name, ...rest) => {
			into.exchanges.add(name);
			return assertExchange(name, ...rest);
		};
		ch.__carsiRecorded = true;
	};
	for (const method of ["subscribe", "subscribeBalancedRequest", "subscribeBalancedEvent"]) {
		const original = tx[method] as (...args: unknown[]) => unknown;
		if (typeof original !== "function") throw new Error(`recordAmqpResources: the transporter has no ${method}()`);
		tx[method] = (...args: unknown[]) => {
			wrapChannel();
			return original.apply(tx, args);
		};
	}
}

/**
 * What Moleculer 0.14's AMQP transporter declares for nodes of `namespace` with the built-in
 * balancer on (transit.js makeSubscriptions): per node, a queue per packet type; per namespace,
 * a fanout exchange per broadcast packet. For nodes the suite cannot record, e.g. child processes.
 */
export function moleculerAmqpResources(namespace: string, nodeIDs: string[]): AmqpResources {
	const prefix = `MOL-${namespace}`;
	const perNode = ["EVENT", "REQ", "RES", "DISCOVER", "INFO", "DISCONNECT", "HEARTBEAT", "PING", "PONG"];
	const broadcast = ["DISCOVER", "INFO", "DISCONNECT", "HEARTBEAT", "PING"];
	return {
		queues: new Set(nodeIDs.flatMap(id => perNode.map(cmd => `${prefix}.${cmd}.${id}`))),
		exchanges: new Set(broadcast.map(cmd => `${prefix}.${cmd}`)),
	};
}

/** Deletes the recorded queues and exchanges (deleting one that already expired is a no-op). */
export async function deleteAmqpResources(resources: AmqpResources, namespace: string): Promise<void> {
	const prefix = `MOL-${namespace}.`;
	await deleteResources(resources, n => n.startsWith(prefix), prefix);
}

/** Deletes every queue and exchange of `resources`, after checking each is one of ours. */
async function deleteResources(resources: AmqpResources, ours: (name: string) => boolean, label: string): Promise<void> {
	const foreign = [...resources.queues, ...resources.exchanges].filter(n => !ours(n));
	if (foreign.length > 0) throw new Error(`refusing to delete resources outside ${label}: ${foreign.join(", ")}`);
	const connection = await amqp.connect(SERVERS.rabbitmq);
	try {
		const channel = await connection.createChannel();
		for (const queue of resources.queues) await channel.deleteQueue(queue);
		for (const exchange of resources.exchanges) await channel.deleteExchange(exchange);
		await channel.close();
	} finally {
		await connection.close();
	}
	resources.queues.clear();
	resources.exchanges.clear();
}

/** True when RabbitMQ holds a queue of that name (checked on a throwaway channel: a miss closes it). */
export async function queueExists(name: string): Promise<boolean> {
	const connection = await amqp.connect(SERVERS.rabbitmq);
	try {
		const channel = await connection.createChannel();
		channel.on("error", () => undefined);
		try {
			await channel.checkQueue(name);
			await channel.close();
			return true;
		} catch {
			return false;
		}
	} finally {
		await connection.close();
	}
}

/**
 * What the durable channels (lib/channels) declare under `prefix` for these events and groups:
 * an exchange per event; per group a queue per event, a retry exchange + queue and a DLQ.
 */
export function channelsAmqpResources(prefix: string, groupsByEvent: Record<string, string[]>): AmqpResources {
	const out: AmqpResources = { queues: new Set(), exchanges: new Set() };
	for (const [event, groups] of Object.entries(groupsByEvent)) {
		out.exchanges.add(channelName(prefix, event));
		for (const group of groups) {
			out.queues.add(mainQueueName(group, channelName(prefix, event)));
			out.queues.add(retryName(group, prefix));
			out.exchanges.add(retryName(group, prefix));
			out.queues.add(dlqName(group, prefix));
		}
	}
	return out;
}

/** Adds what the channel adapter of `broker` declared (ConfirmingAmqpAdapter.declaredNames) to `into`. */
export function recordChannelsResources(broker: ServiceBroker, into: AmqpResources): void {
	const adapter = (broker as unknown as { channelAdapter?: { declaredNames?: { queues: Set<string>; exchanges: Set<string> } } }).channelAdapter;
	for (const q of adapter?.declaredNames?.queues ?? []) into.queues.add(q);
	for (const x of adapter?.declaredNames?.exchanges ?? []) into.exchanges.add(x);
}

/** Deletes the channels' queues and exchanges of `prefix` (each name must carry the prefix as a dotted segment). */
export async function deleteChannelsAmqpResources(resources: AmqpResources, prefix: string): Promise<void> {
	if (prefix.length < 6) throw new Error(`refusing to delete resources of the short prefix ${prefix}`);
	await deleteResources(resources, n => n.startsWith(`${prefix}.`) || n.includes(`.${prefix}.`), prefix);
}
