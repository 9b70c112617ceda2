/**
 * The order's rules, apart from HTTP, storage and the broker: pure functions only.
 */
import { createHash } from "node:crypto";
import type { Order, OrderItem, OrderStatus } from "../../lib/events";
import { ConflictError, ValidationFailedError } from "../../lib/errors";

export interface RequestedItem {
	productId: number;
	quantity: number;
}

/** A line as the catalog reserved it: name, sku and price come from products, never the client. */
export interface PricedLine extends OrderItem {
	currency: string;
}

export const MAX_TOTAL_CENTS = Number.MAX_SAFE_INTEGER;

/** One line per product (quantities added), in product order: the same order is the same request. */
export function normalizeItems(items: RequestedItem[]): RequestedItem[] {
	const byId = new Map<number, number>();
	for (const { productId, quantity } of items) byId.set(productId, (byId.get(productId) ?? 0) + quantity);
	return [...byId.entries()].sort(([a], [b]) => a - b).map(([productId, quantity]) => ({ productId, quantity }));
}

/** What makes two requests "the same body" for an Idempotency-Key. */
export function requestHash(items: RequestedItem[]): string {
	return createHash("sha256").update(JSON.stringify(normalizeItems(items))).digest("hex");
}

/**
 * The order id of a keyed request, derived from the user and the key: a retry after a crash or a
 * timeout reaches the same reservation in products, so stock is never held twice for one key.
 * Formatted as an RFC 4122 name-based (version 5 style) UUID.
 */
export function orderIdFor(userId: number, idempotencyKey: string): string {
	const h = createHash("sha256").update(`carsi-order:${userId}:${idempotencyKey}`).digest();
	h[6] = (h[6] & 0x0f) | 0x50;
	h[8] = (h[8] & 0x3f) | 0x80;
	const hex = h.subarray(0, 16).toString("hex");
	return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** Total in integer cents, in the one currency every line shares. */
export function priceOrder(lines: PricedLine[]): { items: OrderItem[]; totalCents: number; currency: string } {
	const currencies = new Set(lines.map(l => l.currency));
	if (currencies.size !== 1)
		throw new ValidationFailedError([{ field: "items", message: `An order takes one currency; these products are priced in ${[...currencies].join(", ")}.` }]);
	const totalCents = lines.reduce((sum, l) => sum + l.unitPriceCents * l.quantity, 0);
	if (!Number.isSafeInteger(totalCents) || totalCents > MAX_TOTAL_CENTS)
		throw new ValidationFailedError([{ field: "items", message: "The order total is too large." }]);
	return {
		items: lines.map(({ productId, sku, name, quantity, unitPriceCents }) => ({ productId, sku, name, quantity, unitPriceCents })),
		totalCents,
		currency: [...currencies][0],
	};
}

export function canCancel(status: OrderStatus): boolean {
	return status === "placed";
}

export class OrderNotCancellableError extends ConflictError {
	constructor(order: Pick<Order, "id" | "status">) {
		super(`Order ${order.id} is ${order.status} and cannot be cancelled`, "ORDER_NOT_CANCELLABLE", { status: order.status });
	}
}

export class IdempotencyKeyReusedError extends ConflictError {
	constructor() {
		super("This Idempotency-Key was used with a different request body", "IDEMPOTENCY_KEY_REUSED", { field: "Idempotency-Key" });
	}
}

/** Printable ASCII, 1-200 characters (Stripe and the IETF draft take similar keys). */
export function checkIdempotencyKey(key: unknown): string | undefined {
	if (key === undefined || key === null || key === "") return undefined;
	if (typeof key !== "string" || key.length > 200 || !/^[\x21-\x7e]+$/.test(key))
		throw new ValidationFailedError([{ field: "Idempotency-Key", message: "The Idempotency-Key header must be 1-200 printable ASCII characters." }]);
	return key;
}
