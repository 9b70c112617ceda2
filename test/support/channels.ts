/**
 * Small standalone brokers for the durable-channel suites: no transporter, no services of Çarşı,
 * only the channels middleware (lib/channels) and the tiny consumer services a test declares.
 * Set CHANNELS_TEST_LOG=debug (or info, warn) to see the adapters' logs.
 */
import { randomBytes } from "node:crypto";
import os from "node:os";
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import { buildChannelsMiddleware, consumer, type ChannelsOptions, type ConsumerOptions } from "../../lib/channels";

export function uniqueNamespace(prefix = "ch"): string {
	return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`;
}

export interface ChannelsNodeOptions extends Partial<ChannelsOptions> {
	namespace: string;
	consumerGroups: Record<string, string[]>;
	nodeID?: string;
}

export function channelsNode(opts: ChannelsNodeOptions): ServiceBroker {
	const level = process.env.CHANNELS_TEST_LOG;
	return new ServiceBroker({
		logger: level ? { type: "Console", options: { level, formatter: "short" } } : false,
		namespace: opts.namespace,
		nodeID: opts.nodeID ?? `${opts.namespace}-${randomBytes(2).toString("hex")}`,
		metrics: { enabled: false },
		middlewares: [
			buildChannelsMiddleware({
				dataDir: os.tmpdir(),
				maxRetries: 3,
				retryDelayMs: 50,
				...opts,
			}),
		],
	});
}

export interface Delivery {
	eventId: string;
	/** Order of arrival over the whole test, across consumers. */
	seq: number;
	payload: Record<string, unknown>;
	meta: Record<string, unknown>;
	requestID: string | null;
	raw: any;
}

/** Records what a consumer service receives, in arrival order. */
export class Recorder {
	readonly all: Delivery[] = [];
	private seq = 0;

	note(ctx: Context<Record<string, unknown>, Record<string, unknown>>, raw: unknown): Delivery {
		const d: Delivery = {
			eventId: String(ctx.params.eventId),
			seq: this.seq++,
			payload: ctx.params,
			meta: ctx.meta ?? {},
			requestID: ctx.requestID ?? null,
			raw,
		};
		this.all.push(d);
		return d;
	}

	of(eventId: string): Delivery[] {
		return this.all.filter(d => d.eventId === eventId);
	}

	/** Distinct event ids received. */
	ids(): Set<string> {
		return new Set(this.all.map(d => d.eventId));
	}

	/** How many event ids were received more than once. */
	duplicates(): number {
		const counts = new Map<string, number>();
		for (const d of this.all) counts.set(d.eventId, (counts.get(d.eventId) ?? 0) + 1);
		return [...counts.values()].filter(n => n > 1).length;
	}
}

/**
 * A service consuming `events` as `group`: records each delivery, then runs `behaviour` (throw to
 * fail the attempt).
 */
export function consumerService(
	name: string,
	group: string,
	events: string[],
	recorder: Recorder,
	behaviour: (d: Delivery) => unknown = () => undefined,
	opts: ConsumerOptions = {},
): ServiceSchema {
	return {
		name,
		channels: Object.fromEntries(
			events.map(event => [
				event,
				consumer<Record<string, unknown>>(group, async (ctx, raw) => behaviour(recorder.note(ctx, raw)), opts),
			]),
		),
	};
}

export function event(extra: Record<string, unknown> = {}): { eventId: string; occurredAt: string } & Record<string, unknown> {
	return { eventId: `ev-${randomBytes(8).toString("hex")}`, occurredAt: new Date().toISOString(), ...extra };
}
