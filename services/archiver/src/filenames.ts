/**
 * Attachment names come from senders: they are hostile until proven otherwise. The stored name
 * is what lands on disk and what an agent downloads, so it must mean what it shows:
 *
 * - NFKC first, so compatibility forms cannot smuggle anything past the later checks (`COM¹` is
 *   `COM1` to Windows, a full-width `／` is a slash), and again after removing characters;
 * - no control, format or invisible characters: bidi overrides and isolates (`report‮fdp.bat`
 *   shows as `reporttab.pdf`), zero-width characters, the BOM, soft hyphens, tag and
 *   variation-selector characters, Hangul fillers, line and paragraph separators (U+2028/2029),
 *   private-use, unassigned and lone surrogate code points;
 * - no path separators or Windows-reserved characters, no leading `.`/`-`/space (hidden files,
 *   command-line options), no trailing dot or space, no Windows device name (CON, PRN, AUX, NUL,
 *   COM0-9, LPT0-9, CONIN$, CONOUT$, CLOCK$, with any extension);
 * - the real extension is kept (also when the name was only a BOM and `.pdf`), embedded messages
 *   end in `.eml`, and when nothing visible remains the name is `attachment-<n>.<extension of the
 *   content type>`;
 * - at most 120 UTF-8 bytes, unique (case-insensitively) within the message.
 *
 * The original name is kept in the metadata (attachments.original_name, meta.json).
 */
const DEVICE = /^(con|prn|aux|nul|com[0-9]|lpt[0-9]|conin\$|conout\$|clock\$)(\s*\..*)?$/i;
const MAX_BYTES = 120;

/**
 * Characters that draw nothing or change how the rest is drawn. \p{Cf} holds the bidi controls,
 * zero-width characters, BOM, soft hyphen and tags; the rest are invisible "letters" and marks.
 */
// eslint-disable-next-line no-misleading-character-class -- the combining marks listed are removed one by one, on purpose
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0\ufe00-\ufe0f\u{e0100}-\u{e01ef}]/gu;

const TYPE_EXTENSIONS: Record<string, string> = {
  "application/pdf": "pdf",
  "application/zip": "zip",
  "application/json": "json",
  "application/xml": "xml",
  "application/msword": "doc",
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
  "application/vnd.ms-excel": "xls",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
  "application/vnd.ms-powerpoint": "ppt",
  "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
  "application/pkcs7-signature": "p7s",
  "application/x-pkcs7-signature": "p7s",
  "application/pgp-signature": "asc",
  "application/ms-tnef": "dat",
  "image/png": "png",
  "image/jpeg": "jpg",
  "image/gif": "gif",
  "image/webp": "webp",
  "image/svg+xml": "svg",
  "image/tiff": "tif",
  "image/bmp": "bmp",
  "text/plain": "txt",
  "text/html": "html",
  "text/csv": "csv",
  "text/calendar": "ics",
  "text/rfc822-headers": "txt",
  "text/vcard": "vcf",
  "text/x-vcard": "vcf",
  "message/rfc822": "eml",
  "message/global": "eml",
  "message/delivery-status": "txt",
  "message/disposition-notification": "txt",
  "audio/mpeg": "mp3",
  "video/mp4": "mp4",
};

/** The extension files of a content type get (`bin` when unknown). */
export function extensionFor(contentType: string | undefined): string {
  const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
  return TYPE_EXTENSIONS[type] ?? "bin";
}

/** The name with every invisible character removed, NFKC-normalised: what a person would read. */
export function visibleName(original: string): string {
  return original.normalize("NFKC").replace(INVISIBLE, "").normalize("NFKC").replace(INVISIBLE, "").replace(/\s+/gu, " ");
}

export function sanitizeFileName(original: string | undefined, index: number, taken: Set<string>, contentType?: string): string {
  const embedded = /^message\/(rfc822|global)\b/i.test(contentType ?? "");
  const visible = visibleName(original ?? "")
    .replace(/[/\\:*?"<>|]/g, "_")
    .replace(/[\s.]+$/u, "")
    .replace(/^[\s-]+/u, "");
  // A name that is only an extension (".pdf", or a BOM and ".pdf") keeps it, with a stem of ours.
  const onlyExtension = /^[\s.-]*\.([\p{L}\p{N}]{1,10})$/u.exec(visible);
  let name = onlyExtension ? "" : visible.replace(/^[\s.-]+/u, "");
  let extension = onlyExtension ? onlyExtension[1]! : undefined;
  if (name === "") {
    name = `attachment-${index}.${extension ?? extensionFor(contentType)}`;
    extension = undefined;
  }
  if (embedded && !/\.eml$/i.test(name)) name = `${name}.eml`;
  if (DEVICE.test(name) || DEVICE.test(name.split(".")[0]!.trim())) name = `_${name}`;
  name = truncateUtf8(name, MAX_BYTES);
  let candidate = name;
  for (let n = 2; taken.has(candidate.toLowerCase()); n++) {
    const dot = name.lastIndexOf(".");
    const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ""];
    candidate = `${truncateUtf8(stem, MAX_BYTES - Buffer.byteLength(ext) - 4)}-${n}${ext}`;
  }
  taken.add(candidate.toLowerCase());
  return candidate;
}

/** Cuts to at most `max` UTF-8 bytes without splitting a character, keeping the extension. */
function truncateUtf8(name: string, max: number): string {
  if (Buffer.byteLength(name) <= max) return name;
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 && name.length - dot <= 11 ? name.slice(dot) : "";
  let stem = ext ? name.slice(0, dot) : name;
  while (Buffer.byteLength(stem + ext) > max) stem = [...stem].slice(0, -1).join("");
  return stem.replace(/[\s.]+$/u, "") + ext;
}
