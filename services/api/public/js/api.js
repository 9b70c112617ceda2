// What both pages share: the signed-in user, calls to the JSON API, money, and the live
// notification stream. Plain ES module, no build step.

const AUTH_KEY = "carsi.auth";

/** The signed-in user and token, kept in localStorage so both pages and reloads share them. */
export const auth = {
	get() {
		try {
			return JSON.parse(localStorage.getItem(AUTH_KEY) ?? "null");
		} catch {
			return null;
		}
	},
	set(value) {
		if (value) localStorage.setItem(AUTH_KEY, JSON.stringify({ token: value.token, user: value.user }));
		else localStorage.removeItem(AUTH_KEY);
		window.dispatchEvent(new Event("carsi-auth"));
	},
};

/** An error answer of the API (API.md's error table): status, type, message, data. */
export class ApiError extends Error {
	constructor(status, body) {
		super(body?.message ?? `HTTP ${status}`);
		this.status = status;
		this.type = body?.type ?? "UNKNOWN";
		this.data = body?.data;
	}

	/** 422's `{ field, message }` list as an object by field (the first message of each). */
	get fields() {
		const out = {};
		if (Array.isArray(this.data)) for (const e of this.data) out[e.field] ??= e.message;
		else if (this.data?.field) out[this.data.field] = this.message;
		return out;
	}
}

/**
 * One call: JSON in and out, the bearer token when signed in. Answers { status, body, headers };
 * throws ApiError on 4xx/5xx and a TypeError when the network failed.
 */
export async function api(method, path, { body, headers = {} } = {}) {
	const token = auth.get()?.token;
	const init = { method, headers: { Accept: "application/json", ...headers } };
	if (token) init.headers.Authorization = `Bearer ${token}`;
	if (body !== undefined) {
		init.headers["Content-Type"] = "application/json";
		init.body = JSON.stringify(body);
	}
	const res = await fetch(path, init);
	const text = await res.text();
	let parsed;
	try {
		parsed = text ? JSON.parse(text) : undefined;
	} catch {
		parsed = undefined;
	}
	if (!res.ok) {
		// A token that expired or whose user is gone: sign out, the page shows the login form.
		if (res.status === 401 && token && !path.startsWith("/api/users/login")) auth.set(null);
		throw new ApiError(res.status, parsed);
	}
	return { status: res.status, body: parsed, headers: res.headers };
}

const formats = new Map();
/** Integer minor units and an ISO 4217 code, as the catalog stores them. */
export function money(cents, currency = "TRY") {
	if (!formats.has(currency)) formats.set(currency, new Intl.NumberFormat("tr-TR", { style: "currency", currency }));
	return formats.get(currency).format(cents / 100);
}

export function when(iso) {
	return iso ? new Date(iso).toLocaleString() : "";
}

/**
 * The caller's notifications as they are stored, over GET /api/notifications/stream. EventSource
 * cannot send the Authorization header, so this reads the same text/event-stream with fetch().
 * Reconnects after a pause when the connection drops and calls onOpen each time it (re)opens, so
 * the page can read the list again for what it missed. Answers a function that closes it.
 */
export function streamNotifications({ onNotification, onOpen, onState }) {
	const controller = new AbortController();
	let retryMs = 2000;
	let closed = false;

	async function connect() {
		const token = auth.get()?.token;
		if (!token || closed) return;
		try {
			const res = await fetch("/api/notifications/stream", {
				headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" },
				signal: controller.signal,
				cache: "no-store",
			});
			if (res.status === 401) {
				auth.set(null);
				return;
			}
			if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
			onState?.("open");
			onOpen?.();
			const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
			let buffer = "";
			for (;;) {
				const { value, done } = await reader.read();
				if (done) break;
				buffer += value;
				let end;
				while ((end = buffer.indexOf("\n\n")) >= 0) {
					const frame = buffer.slice(0, end);
					buffer = buffer.slice(end + 2);
					const event = parseFrame(frame);
					if (event.retry) retryMs = event.retry;
					if (event.event === "notification" && event.data) onNotification(JSON.parse(event.data));
				}
			}
		} catch (err) {
			if (closed) return;
		}
		if (closed) return;
		onState?.("reconnecting");
		setTimeout(connect, retryMs);
	}

	connect();
	return () => {
		closed = true;
		controller.abort();
	};
}

function parseFrame(frame) {
	const out = { data: "" };
	for (const line of frame.split("\n")) {
		if (!line || line.startsWith(":")) continue;
		const i = line.indexOf(":");
		const field = i < 0 ? line : line.slice(0, i);
		const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
		if (field === "data") out.data += (out.data ? "\n" : "") + value;
		else if (field === "event") out.event = value;
		else if (field === "retry" && /^\d+$/.test(value)) out.retry = Number(value);
	}
	return out;
}

/** A new Idempotency-Key: 128 random bits (getRandomValues works outside secure contexts too, randomUUID does not). */
export function newKey() {
	return Array.from(crypto.getRandomValues(new Uint8Array(16)), b => b.toString(16).padStart(2, "0")).join("");
}
