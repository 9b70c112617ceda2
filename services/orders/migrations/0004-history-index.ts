import type { Migration } from "../../../mixins/db.mixin";

/**
 * A customer's history is read newest first with the id as tiebreak (orders.list: created_at DESC,
 * id DESC). The index of 0001 holds (user_id, created_at) only: a page then needs a sort of the
 * rows of equal time. This one holds the list's whole order, so a page is the first rows of an
 * index range.
 */
export const historyIndex: Migration = {
	name: "0004-history-index",
	async up(qi) {
		await qi.addIndex("orders", [{ name: "user_id" }, { name: "created_at", order: "DESC" }, { name: "id", order: "DESC" }] as never, { name: "orders_user_history" });
		await qi.removeIndex("orders", "orders_user_created_at");
	},
	async down(qi) {
		await qi.addIndex("orders", ["user_id", "created_at"], { name: "orders_user_created_at" });
		await qi.removeIndex("orders", "orders_user_history");
	},
};
