/**
 * Tracing across nodes (Moleculer's tracer).
 *
 * Every node sends its finished spans, in a compact form without tags, as a `$tracing.spans`
 * broadcast (Moleculer's "Event" exporter, batched every second). The gateway keeps them in a
 * TraceStore for the admin endpoints (`GET /api/admin/traces`). TRACING_EXPORTER adds an exporter
 * a user runs: `console` (a tree per trace on stdout, for development) or `zipkin` (Zipkin's HTTP
 * JSON API v2; Jaeger accepts the same on its Zipkin-compatible port, without Jaeger's client
 * package and its Thrift/UDP dependencies).
 *
 * The requestID of a request is its traceId (Moleculer makes them the same). Spans carry no
 * params or meta as tags: they would copy passwords and tokens to the exporters.
 */
import type { BrokerOptions } from "moleculer";
import type { TracingConfig } from "./config";

export const SPANS_EVENT = "$tracing.spans";

/** A finished span as the collector keeps it and the admin API shows it. */
export interface CollectedSpan {
	id: string;
	parentId: string | null;
	traceId: string;
	name: string;
	service: string | null;
	nodeId: string;
	startTime: number;
	finishTime: number;
	duration: number;
	error?: { name: string; message: string; code?: number; type?: string };
}

interface MoleculerSpan {
	id: string;
	parentID?: string | null;
	traceID: string;
	name: string;
	service?: { name?: string; fullName?: string } | null;
	tags?: { nodeID?: string; chan?: { group?: string } };
	startTime: number;
	finishTime: number;
	duration: number;
	error?: { name?: string; message?: string; code?: number; type?: string } | null;
}

export function toCollectedSpan(span: MoleculerSpan, nodeId: string): CollectedSpan {
	const out: CollectedSpan = {
		id: span.id,
		parentId: span.parentID ?? null,
		traceId: span.traceID,
		name: span.name,
		// A consumer's span (@moleculer/channels) names no service: its group is the consuming service.
		service: span.service?.fullName ?? span.service?.name ?? span.tags?.chan?.group ?? null,
		nodeId,
		startTime: span.startTime,
		finishTime: span.finishTime,
		duration: span.duration,
	};
	if (span.error) {
		const e = span.error;
		out.error = { name: String(e.name ?? "Error"), message: String(e.message ?? "") };
		if (e.code != null) out.error.code = e.code;
		if (e.type != null) out.error.type = e.type;
	}
	return out;
}

export function tracingOptions(config: TracingConfig): BrokerOptions["tracing"] {
	if (!config.enabled) return { enabled: false };
	const exporters: unknown[] = [
		{
			type: "Event",
			options: {
				eventName: SPANS_EVENT,
				// Every gateway keeps every trace (a balanced emit would split them between gateways).
				broadcast: true,
				interval: 1,
				sendStartSpan: false,
				sendFinishSpan: true,
				spanConverter(this: { broker: { nodeID: string } }, span: MoleculerSpan) {
					return toCollectedSpan(span, this.broker.nodeID);
				},
			},
		},
	];
	if (config.exporter === "console")
		exporters.push({ type: "Console", options: { width: 100, gaugeWidth: 40, colors: process.stdout.isTTY } });
	if (config.exporter === "zipkin")
		exporters.push({ type: "Zipkin", options: { baseURL: config.zipkinUrl, interval: 5, payloadOptions: { debug: false, shared: false } } });
	return {
		enabled: true,
		sampling: "perSecond" in config.sample ? { tracesPerSecond: config.sample.perSecond } : { rate: config.sample.rate },
		// No params, meta or response as tags: they hold passwords and tokens.
		tags: { action: { params: false, meta: false, response: false }, event: { params: false, meta: false } },
		events: false,
		stackTrace: false,
		exporter: exporters as never,
	};
}

interface StoredTrace {
	traceId: string;
	spans: CollectedSpan[];
	firstSeen: number;
}

/**
 * The gateway's traces, in memory: at most `maxTraces` (the oldest dropped first) with at most
 * `maxSpans` spans each.
 */
export class TraceStore {
	private traces = new Map<string, StoredTrace>();

	constructor(
		private maxTraces: number,
		private maxSpans = 1000,
	) {}

	add(spans: CollectedSpan[]): void {
		for (const span of spans) {
			if (!span || typeof span.traceId !== "string" || typeof span.id !== "string") continue;
			let trace = this.traces.get(span.traceId);
			if (!trace) {
				trace = { traceId: span.traceId, spans: [], firstSeen: Date.now() };
				this.traces.set(span.traceId, trace);
				if (this.traces.size > this.maxTraces) this.traces.delete(this.traces.keys().next().value as string);
			}
			if (trace.spans.length < this.maxSpans && !trace.spans.some(s => s.id === span.id)) trace.spans.push(span);
		}
	}

	/** The root span: the one without a parent in this trace (the earliest when there are several). */
	private root(trace: StoredTrace): CollectedSpan {
		const ids = new Set(trace.spans.map(s => s.id));
		const roots = trace.spans.filter(s => !s.parentId || !ids.has(s.parentId));
		return (roots.length > 0 ? roots : trace.spans).reduce((a, b) => (b.startTime < a.startTime ? b : a));
	}

	list(limit: number): Array<{ traceId: string; name: string; startTime: number; duration: number; spans: number }> {
		return [...this.traces.values()]
			.map(t => {
				const root = this.root(t);
				const start = Math.min(...t.spans.map(s => s.startTime));
				const end = Math.max(...t.spans.map(s => s.finishTime));
				return { traceId: t.traceId, name: root.name, startTime: start, duration: end - start, spans: t.spans.length };
			})
			.sort((a, b) => b.startTime - a.startTime)
			.slice(0, limit);
	}

	get(traceId: string): { traceId: string; spans: CollectedSpan[] } | null {
		const trace = this.traces.get(traceId);
		if (!trace) return null;
		// Moleculer stamps a span's start in whole milliseconds: a call and the call it makes often
		// start in the same one. Of two spans started together, the caller comes first.
		const byId = new Map(trace.spans.map(s => [s.id, s]));
		const depth = (span: CollectedSpan): number => {
			let d = 0;
			for (let p = span.parentId ? byId.get(span.parentId) : undefined; p && d < trace.spans.length; p = p.parentId ? byId.get(p.parentId) : undefined) d++;
			return d;
		};
		const depths = new Map(trace.spans.map(s => [s.id, depth(s)]));
		return { traceId, spans: [...trace.spans].sort((a, b) => a.startTime - b.startTime || depths.get(a.id)! - depths.get(b.id)!) };
	}
}
