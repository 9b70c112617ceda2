/**
 * Which part of a search text the trigram index is asked for, on PostgreSQL.
 *
 * The index answers `LIKE '%text%'` by intersecting the posting lists of every trigram of the text,
 * so a text that holds a word most products share pays for that word's lists whatever else it
 * holds: "product 54321" over 100,000 products named "… product N" reads 231 index pages (3 ms),
 * "54321" alone 7 (0.1 ms), for the same one match. When one word of the text is rare in the
 * catalog, the index is asked for that word and every candidate row is checked against the whole
 * text (`strpos`, which no index serves, so the planner keeps it out of the index scan). Any row
 * holding the text holds each of its words, so the answer is the same whichever word is picked:
 * the statistics only decide what the search costs.
 *
 * How rare a word is comes from PostgreSQL's own sample of the column (pg_stats: its most common
 * values with their shares, and the histogram's bounds for the rest), which ANALYZE and autovacuum
 * keep; the planner estimates a LIKE from the same sample.
 *
 * The same sample tells how many products a search will match, which decides the shape of its
 * statements in products.list (its page alone, or page and total in one). SQLite keeps no sample,
 * so there the service draws one (SQLITE_SAMPLE_SQL) for that guess alone.
 */

/** A sampled value of the search column and the share of the rows it stands for. */
export interface SearchSample {
	text: string;
	share: number;
}

/** Below this estimated share of the rows a word is asked for alone: in at most 2 of the histogram's 101 bounds. */
export const RARE_SHARE = 0.02;

/** How long the sample is kept before it is read again (ANALYZE changes it rarely). */
export const SEARCH_STATS_TTL_MS = 60_000;

/**
 * The words of a (lower-cased) search text that give the index a trigram: runs of letters and
 * digits, as pg_trgm splits words, of three characters or more.
 */
export function searchWords(text: string): string[] {
	return text.split(/[^\p{L}\p{N}]+/u).filter(w => [...w].length >= 3);
}

/** The estimated share of the rows whose search text contains `word`. */
export function estimateShare(word: string, sample: readonly SearchSample[]): number {
	let share = 0;
	for (const s of sample) if (s.text.includes(word)) share += s.share;
	return share;
}

/**
 * The one word of `text` to ask the index for instead of the whole text: the rarest, when it is
 * rare (under RARE_SHARE) and is not the whole text already. Undefined: ask for the whole text.
 */
export function indexWord(text: string, sample: readonly SearchSample[] | undefined): string | undefined {
	if (!sample?.length) return undefined;
	let best: { word: string; share: number } | undefined;
	for (const word of searchWords(text)) {
		const share = estimateShare(word, sample);
		// The rarer word; of two alike the longer, whose trigrams narrow the candidates more.
		if (!best || share < best.share || (share === best.share && word.length > best.word.length)) best = { word, share };
	}
	if (!best || best.share >= RARE_SHARE || best.word === text) return undefined;
	return best.word;
}

/**
 * How many of `rows` rows the sample expects to contain `text`: 0 when no sampled value holds it
 * (fewer than about one row in a hundred, the share one histogram bound stands for).
 */
export function expectedMatches(text: string, sample: readonly SearchSample[], rows: number): number {
	return estimateShare(text, sample) * rows;
}

/** pg_stats' row for the column, as its arrays read back as text[], and the table's row estimate. */
export interface ColumnStats {
	null_frac: number | null;
	mcv: string[] | null;
	mcf: number[] | null;
	hist: string[] | null;
	/** pg_class.reltuples: what ANALYZE last counted (-1 or 0 before it ever ran). */
	rows?: number | null;
}

/**
 * The sample as shares: each most common value with its own frequency; each histogram bound with
 * an equal part of the rest. Undefined when the column has not been analyzed yet.
 */
export function sampleFromStats(stats: ColumnStats | undefined): SearchSample[] | undefined {
	if (!stats) return undefined;
	const mcv = stats.mcv ?? [];
	const mcf = stats.mcf ?? [];
	const sample: SearchSample[] = mcv.map((text, i) => ({ text, share: mcf[i] ?? 0 }));
	const hist = stats.hist ?? [];
	if (hist.length) {
		const rest = Math.max(0, 1 - (stats.null_frac ?? 0) - mcf.reduce((a, b) => a + b, 0));
		for (const text of hist) sample.push({ text, share: rest / hist.length });
	}
	return sample.length ? sample : undefined;
}

/** The statement that reads the sample of column $2 of table $1 in the connection's schema, with the table's row estimate. */
export const COLUMN_STATS_SQL =
	"SELECT s.null_frac, s.most_common_vals::text::text[] AS mcv, s.most_common_freqs AS mcf, s.histogram_bounds::text::text[] AS hist, " +
	"(SELECT c.reltuples::float8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = s.schemaname AND c.relname = s.tablename) AS rows " +
	"FROM pg_stats s WHERE s.schemaname = current_schema() AND s.tablename = $1 AND s.attname = $2";

/**
 * SQLite keeps no sample of a column: the service draws one, SQLITE_SAMPLE_ROWS rows at random,
 * each standing for an equal share of the rows as a histogram bound does (sqliteStats), each with
 * the table's row count (one statement; SQLite runs the uncorrelated count once).
 */
export const SQLITE_SAMPLE_ROWS = 100;
export const SQLITE_SAMPLE_SQL =
	"SELECT lower(name) || char(31) || lower(description) AS text, (SELECT count(*) FROM products) AS n " +
	`FROM products ORDER BY random() LIMIT ${SQLITE_SAMPLE_ROWS}`;

/** SQLite's drawn sample (SQLITE_SAMPLE_SQL's rows) in pg_stats' shape: no rows, an empty table. */
export function sqliteStats(sample: Array<{ text: string; n: number | string }>): ColumnStats {
	return { null_frac: 0, mcv: null, mcf: null, hist: sample.map(r => r.text), rows: sample.length ? Number(sample[0].n) : 0 };
}

/**
 * The sample, read again in the background when older than `ttlMs`: a search never waits for it,
 * and one read at a time. A failed read keeps the last sample (a stale one only costs time).
 */
export class SearchStats {
	private sample: SearchSample[] | undefined;
	private rows = 0;
	private readAt = -Infinity;
	private reading: Promise<void> | undefined;

	constructor(
		private readonly read: () => Promise<ColumnStats | undefined>,
		private readonly ttlMs = SEARCH_STATS_TTL_MS,
		private readonly onError: (err: unknown) => void = () => undefined,
	) {}

	/** The sample as last read (undefined until the first read ends); starts a read when due. */
	current(): SearchSample[] | undefined {
		if (!this.reading && Date.now() - this.readAt >= this.ttlMs) void this.refresh();
		return this.sample;
	}

	/** How many rows the sample expects to hold `text`; undefined without a sample or a row estimate. */
	matches(text: string): number | undefined {
		const sample = this.current();
		return sample && this.rows > 0 ? expectedMatches(text, sample, this.rows) : undefined;
	}

	/** The share of the rows the sample expects to hold `text`; undefined without a sample. */
	share(text: string): number | undefined {
		const sample = this.current();
		return sample ? estimateShare(text, sample) : undefined;
	}

	/** Reads the sample now (or joins the read under way). */
	refresh(): Promise<void> {
		this.reading ??= this.read()
			.then(stats => {
				this.sample = sampleFromStats(stats);
				this.rows = Math.max(0, stats?.rows ?? 0);
			}, this.onError)
			.finally(() => {
				this.readAt = Date.now();
				this.reading = undefined;
			});
		return this.reading;
	}
}
