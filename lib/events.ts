/**
 * Business events: plain records with an id and a time, typed once for producer and consumer.
 * Every payload carries { eventId, occurredAt } (API.md "Events").
 *
 * They travel durably through @moleculer/channels (see lib/channels): persistent messages in
 * durable queues, one queue per consumer group, acknowledged after the handler succeeded.
 * Moleculer's own events (broker.emit) stay for broker-internal signals only.
 */
import { randomUUID } from "node:crypto";

export interface PublicUser {
	id: number;
	email: string;
	name: string;
	role: "customer" | "admin";
	createdAt: string;
}

export type OrderStatus = "placed" | "cancelled";

export interface OrderItem {
	productId: number;
	sku: string;
	name: string;
	quantity: number;
	unitPriceCents: number;
}

export interface Order {
	id: string;
	userId: number;
	status: OrderStatus;
	items: OrderItem[];
	totalCents: number;
	currency: string;
	createdAt: string;
	updatedAt: string;
}

export interface EventEnvelope {
	eventId: string;
	occurredAt: string;
}

export interface UserRegistered extends EventEnvelope {
	user: PublicUser;
}

export interface OrderCreated extends EventEnvelope {
	order: Order;
}

export interface OrderCancelled extends EventEnvelope {
	order: Order;
}

export interface BusinessEvents {
	"user.registered": UserRegistered;
	"order.created": OrderCreated;
	"order.cancelled": OrderCancelled;
}

export type BusinessEventName = keyof BusinessEvents;

export const BUSINESS_EVENTS: BusinessEventName[] = ["user.registered", "order.created", "order.cancelled"];

/**
 * The consumer groups of each event. A producer declares these groups' queues before it
 * publishes (lib/channels), so an event published before a consumer ever started waits in its
 * queue instead of being dropped by an exchange with nothing bound. A new consumer group is added
 * here first.
 */
export const CONSUMER_GROUPS: Record<BusinessEventName, string[]> = {
	"user.registered": ["notifications"],
	// products confirms a reservation on order.created and releases it on order.cancelled: the
	// durable path behind the synchronous calls the orders service makes.
	"order.created": ["notifications", "products"],
	"order.cancelled": ["notifications", "products"],
};

export function envelope(): EventEnvelope {
	return { eventId: randomUUID(), occurredAt: new Date().toISOString() };
}

/**
 * A Moleculer event (not a business event): notifications broadcasts it with the Notification
 * once one is stored as sent or failed, and every gateway node pushes it to that user's open
 * notification streams. Fire and forget: nothing is lost when no page listens, because the list
 * (GET /api/notifications) is the record.
 */
export const NOTIFICATION_STORED = "notifications.stored";
