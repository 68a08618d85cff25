/**
 * Which tables a TypeScript file's SQL touches, and how: the static half of the ownership check
 * (ownership.test.ts). Every string and template literal that reads as SQL is taken from the
 * syntax tree (so comments and identifiers never count), `${…}` parts become a placeholder, and
 * the table after FROM / JOIN / INSERT INTO / UPDATE / DELETE FROM is read with the privilege it
 * needs. A name that is not a table of the ownership map is reported as such rather than skipped,
 * so a query this reader misunderstands fails the check instead of passing unseen.
 *
 * Test tooling only (it loads the TypeScript compiler); not exported from the package.
 */
import ts from "typescript";
import type { TablePrivilege } from "./ownership.js";

export interface SqlUse {
  table: string;
  privilege: TablePrivilege;
  /** Where: file and 1-based line of the literal. */
  file: string;
  line: number;
}

/** A literal reads as SQL when it holds a statement keyword in capitals, as every query here is written. */
const STATEMENT = /\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WITH\s+\w+\s+AS)\b/;
const WORD = "([A-Za-z_][A-Za-z0-9_]*)";
/** Words that end a FROM item; never taken for a table's alias. */
const KEYWORDS = "(?:WHERE|JOIN|LEFT|RIGHT|INNER|OUTER|FULL|CROSS|NATURAL|ON|USING|GROUP|ORDER|LIMIT|OFFSET|HAVING|WINDOW|UNION|EXCEPT|INTERSECT|RETURNING|SET|FOR)";

/** The SQL literals of a source file, with `${…}` replaced by a neutral placeholder. */
export function sqlLiterals(source: string, file: string): { sql: string; line: number }[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: { sql: string; line: number }[] = [];
  const visit = (node: ts.Node) => {
    let text: string | undefined;
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) text = node.text;
    else if (ts.isTemplateExpression(node)) text = node.head.text + node.templateSpans.map((s) => ` $x ${s.literal.text}`).join("");
    if (text !== undefined && STATEMENT.test(text)) {
      found.push({ sql: text, line: sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1 });
    }
    // A template's spans are visited too: a query built inside another's ${…} counts on its own.
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return found;
}

/** The tables one SQL statement (or several) touches, with the privilege each needs. */
export function tablesOf(sql: string): { table: string; privilege: TablePrivilege }[] {
  const text = sql.replace(/--[^\n]*/g, " ");
  const uses: { table: string; privilege: TablePrivilege }[] = [];
  const ctes = new Set<string>();
  for (const m of text.matchAll(new RegExp(`\\bWITH\\s+(?:RECURSIVE\\s+)?${WORD}\\s+AS\\s*\\(`, "gi"))) ctes.add(m[1]!.toLowerCase());
  for (const m of text.matchAll(new RegExp(`\\)\\s*,\\s*${WORD}\\s+AS\\s*\\(`, "gi"))) ctes.add(m[1]!.toLowerCase());
  const add = (table: string, privilege: TablePrivilege) => {
    const t = table.toLowerCase();
    if (!ctes.has(t)) uses.push({ table: t, privilege });
  };
  for (const m of text.matchAll(new RegExp(`\\bINSERT\\s+INTO\\s+${WORD}`, "gi"))) {
    add(m[1]!, "INSERT");
    // ON CONFLICT … DO UPDATE needs UPDATE on the same table; RETURNING needs SELECT.
    const rest = text.slice(m.index);
    if (/\bDO\s+UPDATE\b/i.test(rest)) add(m[1]!, "UPDATE");
    if (/\bRETURNING\b/i.test(rest)) add(m[1]!, "SELECT");
  }
  for (const m of text.matchAll(new RegExp(`\\bUPDATE\\s+(?:ONLY\\s+)?${WORD}\\s+(?:AS\\s+\\w+\\s+|\\w+\\s+)?SET\\b`, "gi"))) {
    add(m[1]!, "UPDATE");
    // An UPDATE reads the rows it filters on.
    add(m[1]!, "SELECT");
  }
  for (const m of text.matchAll(new RegExp(`\\bDELETE\\s+FROM\\s+(?:ONLY\\s+)?${WORD}`, "gi"))) {
    add(m[1]!, "DELETE");
    add(m[1]!, "SELECT");
  }
  // FROM / JOIN a table (not a function call such as unnest(…), not a subquery), and the
  // comma-separated tables that may follow it ("FROM a x, b y").
  const alias = `(?:\\s+(?:AS\\s+)?(?!${KEYWORDS}\\b)\\w+)?`;
  const from = new RegExp(`\\b(DELETE\\s+)?(?:FROM|JOIN)\\s+(?:ONLY\\s+|LATERAL\\s+)?${WORD}\\b(?!\\s*\\()(${alias}(?:\\s*,\\s*\\w+\\b(?!\\s*\\()${alias})*)`, "gi");
  for (const m of text.matchAll(from)) {
    if (m[1]) continue; // DELETE FROM, counted above
    add(m[2]!, "SELECT");
    for (const more of (m[3] ?? "").matchAll(/,\s*(\w+)/g)) add(more[1]!, "SELECT");
  }
  return uses;
}

/** Every table use in a source file. */
export function sqlUsesIn(source: string, file: string): SqlUse[] {
  return sqlLiterals(source, file).flatMap(({ sql, line }) => tablesOf(sql).map((u) => ({ ...u, file, line })));
}
