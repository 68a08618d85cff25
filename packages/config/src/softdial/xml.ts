import { XMLParser, XMLValidator } from "fast-xml-parser";

/** A Softdial config.xml (or the EmailConfig inside it) that cannot be read. */
export class SoftdialImportError extends Error {
  override name = "SoftdialImportError";
  constructor(
    message: string,
    /** Where in the file, 1-based, when the XML parser could tell. */
    readonly position: { line: number; column: number | undefined } | undefined,
    /** The campaign whose EmailConfig is broken, when the problem is inside one. */
    readonly campaign?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** One `<Campaign>` element as found in the file, before any mapping. */
export interface RawCampaign {
  /** 0-based order of appearance in the file. */
  index: number;
  /** The tenantID attribute, or undefined when absent. */
  tenantID: string | undefined;
  /** The name attribute, or undefined when absent. */
  name: string | undefined;
  /** The className element (workflow class), trimmed. */
  className: string | undefined;
  /** EmailConfig's child elements in file order, values untrimmed; null when the campaign has none. */
  emailConfig: [string, string][] | null;
  /** Child elements of EmailConfig that held markup rather than text (so cannot be mapped). */
  structured: string[];
}

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Reads every Campaign element, wherever it appears in the document (Sytel documents the Campaign
 * element, not what surrounds it, and real files nest it differently), and parses the EmailConfig
 * document that its UserParams holds, usually inside CDATA.
 */
export function readCampaigns(xmlText: string): RawCampaign[] {
  assertWellFormed(xmlText, undefined, 0);
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: "@_",
    cdataPropName: "#cdata",
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    isArray: (name) => name === "Campaign",
  });
  const tree: unknown = parser.parse(xmlText);
  const found: Rec[] = [];
  collect(tree, found);

  return found.map((campaign, index) => {
    const name = attr(campaign, "name");
    const label = name ?? `#${index + 1}`;
    const parsed = emailConfigOf(campaign.UserParams, xmlText, label);
    return {
      index,
      tenantID: attr(campaign, "tenantID"),
      name,
      className: text(campaign.className)?.trim() || undefined,
      emailConfig: parsed?.entries ?? null,
      structured: parsed?.structured ?? [],
    };
  });
}

function collect(node: unknown, out: Rec[]): void {
  if (Array.isArray(node)) {
    for (const n of node) collect(n, out);
    return;
  }
  if (!isRec(node)) return;
  for (const [key, value] of Object.entries(node)) {
    if (key === "Campaign") {
      for (const c of Array.isArray(value) ? value : [value]) {
        if (isRec(c)) out.push(c);
        else if (c === "") out.push({}); // <Campaign/>: reported as having no EmailConfig
      }
    } else collect(value, out);
  }
}

function attr(node: Rec, name: string): string | undefined {
  const v = node[`@_${name}`];
  return typeof v === "string" ? v : undefined;
}

function text(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isRec(v) && typeof v["#text"] === "string") return v["#text"];
  return undefined;
}

/** The EmailConfig of a UserParams element: in CDATA (Sytel's example), escaped text, or plain child elements. */
function emailConfigOf(userParams: unknown, xmlText: string, campaign: string): { entries: [string, string][]; structured: string[] } | null {
  if (userParams === undefined) return null;
  let inner: string | undefined;
  if (isRec(userParams) && userParams["#cdata"] !== undefined) {
    const cdata = userParams["#cdata"];
    inner = Array.isArray(cdata) ? cdata.join("") : String(cdata);
  } else if (typeof userParams === "string") {
    inner = userParams; // entity-escaped XML, already unescaped by the parser
  } else if (isRec(userParams) && isRec(userParams.EmailConfig)) {
    return entriesOf(userParams.EmailConfig);
  }
  if (inner === undefined || inner.trim() === "") return null;

  const offset = xmlText.indexOf(inner);
  assertWellFormed(inner, campaign, offset >= 0 ? offset : undefined, xmlText);
  const parser = new XMLParser({ ignoreAttributes: true, parseTagValue: false, trimValues: false, isArray: () => false });
  const doc: unknown = parser.parse(inner);
  if (!isRec(doc) || !isRec(doc.EmailConfig)) {
    throw new SoftdialImportError(
      `campaign "${campaign}": UserParams holds no <EmailConfig> element`,
      undefined,
      campaign,
    );
  }
  return entriesOf(doc.EmailConfig);
}

function entriesOf(config: Rec): { entries: [string, string][]; structured: string[] } {
  const entries: [string, string][] = [];
  const structured: string[] = [];
  for (const [key, value] of Object.entries(config)) {
    if (key === "#text" || key.startsWith("@_")) continue; // whitespace between elements
    const v = Array.isArray(value) ? value[0] : value; // a repeated element: the first one counts
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") entries.push([key, String(v)]);
    else if (v === undefined || v === null) entries.push([key, ""]);
    else if (isRec(v) && Object.keys(v).every((k) => k === "#text")) entries.push([key, text(v) ?? ""]);
    else structured.push(key);
  }
  return { entries, structured };
}

/**
 * Throws a SoftdialImportError with line, column and the likely cause when `xml` is not well formed.
 * For an EmailConfig, `offset` is where its text starts in the whole file, so the position points
 * into the file the operator has open, not into the CDATA section.
 */
function assertWellFormed(xml: string, campaign: string | undefined, offset: number | undefined, whole = xml): void {
  if (xml.trim() === "") {
    throw new SoftdialImportError("the file is empty", { line: 1, column: 1 }, campaign);
  }
  const result = XMLValidator.validate(xml, { allowBooleanAttributes: true });
  if (result === true) return;
  const { msg, line, col } = result.err;
  let position: { line: number; column: number | undefined } = { line, column: col };
  if (campaign !== undefined && offset !== undefined) {
    const before = whole.slice(0, offset);
    const baseLine = before.split("\n").length;
    const baseCol = offset - (before.lastIndexOf("\n") + 1) + 1;
    position = { line: baseLine + line - 1, column: col === undefined ? undefined : line === 1 ? baseCol + col - 1 : col };
  }
  const where = `line ${position.line}${position.column !== undefined ? `, column ${position.column}` : ""}`;
  const subject = campaign !== undefined ? `the EmailConfig of campaign "${campaign}"` : "the XML";
  throw new SoftdialImportError(
    `${subject} is not well-formed at ${where}: ${msg}${likelyCause(msg, xml, campaign !== undefined)}`,
    position,
    campaign,
  );
}

function likelyCause(msg: string, xml: string, inCdata: boolean): string {
  const count = (s: string) => xml.split(s).length - 1;
  if (count("<![CDATA[") > count("]]>")) return " (likely cause: a <![CDATA[ section is not closed with ]]>)";
  if (/char '&'/.test(msg)) return " (likely cause: an unescaped & in a value, often a password or URL; write &amp;)";
  if (/is an invalid name/.test(msg)) return " (likely cause: an unescaped < in a value, or a typo in a tag name; write &lt; for a literal <)";
  if (/Expected closing tag/.test(msg)) return " (likely cause: a misspelt or missing closing tag)";
  if (/Unclosed tag/.test(msg)) return ` (likely cause: a closing tag is missing${inCdata ? "" : ", or the file was cut short"})`;
  if (/open quote|quote/i.test(msg)) return " (likely cause: an attribute value is missing its closing quote)";
  if (/Multiple possible root nodes/.test(msg)) return inCdata ? " (likely cause: text outside <EmailConfig>…</EmailConfig>)" : " (likely cause: more than one top-level element)";
  if (/Start tag expected/.test(msg)) return " (likely cause: this is not an XML file)";
  return "";
}
