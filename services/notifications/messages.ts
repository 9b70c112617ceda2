/**
 * What a notification says: the user it concerns and a short English text for each business
 * event. Pure (no broker, no I/O), so the words are tested apart from delivery.
 */
import type { BusinessEventName, BusinessEvents, Order } from "../../lib/events";

export interface NotificationDraft {
	eventId: string;
	type: BusinessEventName;
	userId: number;
	orderId: string | null;
	subject: string;
	body: string;
	/** The address the event itself carries (user.registered); order events carry none. */
	email?: string;
}

const SUBJECT_MAX = 255;

const minorUnitsByCurrency = new Map<string, number>();

/**
 * The digits after the decimal point of a currency: 2 for TRY, 0 for JPY, 3 for KWD. Remembered per
 * currency: building an Intl.NumberFormat per notification was a visible share of an order's CPU.
 */
function minorUnits(currency: string): number {
	let digits = minorUnitsByCurrency.get(currency);
	if (digits === undefined) {
		try {
			digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ?? 2;
		} catch {
			digits = 2;
		}
		minorUnitsByCurrency.set(currency, digits);
	}
	return digits;
}

/** Integer minor units as text, without floating point: formatMoney(25980, "TRY") is "259.80 TRY". */
export function formatMoney(cents: number, currency: string): string {
	const digits = minorUnits(currency);
	const factor = 10 ** digits;
	const abs = Math.abs(cents);
	const major = Math.floor(abs / factor).toLocaleString("en-US");
	const minor = digits > 0 ? `.${String(abs % factor).padStart(digits, "0")}` : "";
	return `${cents < 0 ? "-" : ""}${major}${minor} ${currency}`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
const shortId = (id: string) => `${id.slice(0, 8)}…`;
const units = (order: Order) => order.items.reduce((n, item) => n + item.quantity, 0);
const clip = (text: string, max: number) => (text.length <= max ? text : `${text.slice(0, max - 1)}…`);

function orderLines(order: Order): string {
	return order.items
		.map(item => `  ${item.quantity} × ${item.name}: ${formatMoney(item.quantity * item.unitPriceCents, order.currency)}`)
		.join("\n");
}

function text(type: BusinessEventName, payload: BusinessEvents[BusinessEventName]): { subject: string; body: string } {
	switch (type) {
		case "order.created": {
			const { order } = payload as BusinessEvents["order.created"];
			const total = formatMoney(order.totalCents, order.currency);
			return {
				subject: `Order ${shortId(order.id)} placed: ${plural(units(order), "item")}, ${total}`,
				body: `Hello,\n\nyour order ${order.id} has been placed.\n\n${orderLines(order)}\n\nTotal: ${total}\n\nThank you for shopping at Çarşı.`,
			};
		}
		case "order.cancelled": {
			const { order } = payload as BusinessEvents["order.cancelled"];
			const total = formatMoney(order.totalCents, order.currency);
			return {
				subject: `Order ${shortId(order.id)} cancelled: ${plural(units(order), "item")}, ${total}`,
				body: `Hello,\n\nyour order ${order.id} (${plural(units(order), "item")}, ${total}) has been cancelled.\n\nÇarşı`,
			};
		}
		case "user.registered": {
			const { user } = payload as BusinessEvents["user.registered"];
			return {
				subject: `Welcome to Çarşı, ${user.name}`,
				body: `Hello ${user.name},\n\nyour Çarşı account ${user.email} is ready.\n\nÇarşı`,
			};
		}
	}
}

/** The notification an event asks for: for the order's owner, or for the user who registered. */
export function composeNotification<E extends BusinessEventName>(type: E, payload: BusinessEvents[E]): NotificationDraft {
	const { subject, body } = text(type, payload);
	const base = { eventId: payload.eventId, type, subject: clip(subject, SUBJECT_MAX), body };
	if (type === "user.registered") {
		const { user } = payload as BusinessEvents["user.registered"];
		return { ...base, userId: user.id, orderId: null, email: user.email };
	}
	const { order } = payload as BusinessEvents["order.created" | "order.cancelled"];
	return { ...base, userId: order.userId, orderId: order.id };
}
