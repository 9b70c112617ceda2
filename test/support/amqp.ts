/**
 * RabbitMQ resources of a test run. Moleculer's AMQP transporter declares per-node queues (which
 * expire with `autoDeleteQueues`), per-action request queues `MOL-<ns>.REQB.<action>` (which never
 * expire) and fanout exchanges (never deleted): the suite records what each broker declared and
 * deletes it with amqplib once the brokers have stopped.
 */
import amqp from "amqplib";
import type { ServiceBroker } from "moleculer";
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
	const foreign = [...resources.queues, ...resources.exchanges].filter(n => !n.startsWith(prefix));
	if (foreign.length > 0) throw new Error(`refusing to delete resources outside ${prefix}: ${foreign.join(", ")}`);
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
