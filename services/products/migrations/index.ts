import type { Migration } from "../../../mixins/db.mixin";
import { createProducts } from "./0001-create-products";
import { createReservations } from "./0002-create-reservations";
import { createSearchIndexes } from "./0003-search-indexes";
import { oneSearchIndex } from "./0004-search-index";
import { searchColumn } from "./0005-search-column";

/** In order; a migration, once released, is never edited: add the next one. */
export const migrations: Migration[] = [createProducts, createReservations, createSearchIndexes, oneSearchIndex, searchColumn];
