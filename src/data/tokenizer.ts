/**
 * The model's tokenizer: tokenizer.json through @huggingface/tokenizers, and the chat template of
 * tokenizer_config.json (or chat_template.jinja) rendered with @huggingface/jinja, with the same
 * variables transformers' apply_chat_template passes (messages, add_generation_prompt, the
 * special token strings).
 */
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { parseJsonText } from "../util/json.ts";
import { invalidArgument, notFound, QloradError } from "../util/errors.ts";

export const TOKENIZER_FILE = "tokenizer.json";
export const TOKENIZER_CONFIG_FILE = "tokenizer_config.json";
/** Newer transformers save the template beside the config instead of inside it. */
export const CHAT_TEMPLATE_FILE = "chat_template.jinja";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface TextTokenizer {
  /** Folder the tokenizer was loaded from. */
  readonly modelDir: string;
  /** Number of ids (largest id, added tokens included, plus one). */
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;
  readonly bosToken?: string;
  readonly eosToken?: string;
  /** False when the tokenizer config sets add_bos_token: false. */
  readonly addBos: boolean;
  readonly hasChatTemplate: boolean;
  /** Token ids; addSpecialTokens (default true) runs the post-processor (e.g. adds bos). */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /**
   * The text of `ids`. cleanUpTokenizationSpaces (default: the config's
   * clean_up_tokenization_spaces, as transformers' decode) turns " ," into "," and the like;
   * false gives the text exactly as the tokens spell it.
   */
  decode(ids: ArrayLike<number>, options?: { cleanUpTokenizationSpaces?: boolean }): string;
  /** The rendered conversation text (tokenize it with addSpecialTokens: false). */
  applyChatTemplate(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
}

/** A special token in tokenizer_config.json: a string or a serialized AddedToken. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (
    typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string"
  ) {
    return (v as { content: string }).content;
  }
  return undefined;
}

async function readOptionalText(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** chat_template may be a string or a list of named templates (the "default" one is used). */
function pickChatTemplate(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => t?.name === "default") ?? (v.length === 1 ? v[0] : undefined);
    if (named && typeof named.template === "string") return named.template;
    throw invalidArgument(`${where}: "chat_template" is a list without a "default" template`);
  }
  throw invalidArgument(`${where}: "chat_template" must be a string or a list of templates`);
}

class HfTextTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosId?: number;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly addBos: boolean;
  readonly #tok: Tokenizer;
  readonly #template?: Template;
  readonly #templateVars: Record<string, string>;
  readonly #configPath: string;

  constructor(
    readonly modelDir: string,
    tok: Tokenizer,
    config: Record<string, unknown>,
    template: Template | undefined,
  ) {
    this.#tok = tok;
    this.#template = template;
    this.#configPath = join(modelDir, TOKENIZER_CONFIG_FILE);
    let maxId = -1;
    for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.#templateVars = {};
    for (const name of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
      const s = tokenString(config[name]);
      if (s !== undefined) this.#templateVars[name] = s;
    }
    this.bosToken = this.#templateVars.bos_token;
    this.eosToken = this.#templateVars.eos_token;
    this.bosId = this.bosToken === undefined ? undefined : tok.token_to_id(this.bosToken);
    this.eosId = this.eosToken === undefined ? undefined : tok.token_to_id(this.eosToken);
    this.addBos = config.add_bos_token !== false;
  }

  get hasChatTemplate(): boolean {
    return this.#template !== undefined;
  }

  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.#tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  decode(ids: ArrayLike<number>, options: { cleanUpTokenizationSpaces?: boolean } = {}): string {
    // The library throws on an empty list (e.g. a sample that stopped at once); no ids is "".
    if (ids.length === 0) return "";
    return this.#tok.decode(Array.from(ids), {
      clean_up_tokenization_spaces: options.cleanUpTokenizationSpaces,
    });
  }

  applyChatTemplate(
    messages: ChatMessage[],
    options: { addGenerationPrompt?: boolean } = {},
  ): string {
    if (!this.#template) {
      throw invalidArgument(
        `${this.#configPath} has no "chat_template" (and there is no ${CHAT_TEMPLATE_FILE})`,
      );
    }
    try {
      return this.#template.render({
        ...this.#templateVars,
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? false,
      });
    } catch (e) {
      throw invalidArgument(`chat template: ${(e as Error).message}`);
    }
  }
}

/**
 * Loads `<modelDir>/tokenizer.json` (notFound when missing) with its tokenizer_config.json
 * (optional: without it there are no bos/eos strings and no chat template).
 */
export async function loadTokenizer(modelDir: string): Promise<TextTokenizer> {
  const tokenizerPath = join(modelDir, TOKENIZER_FILE);
  const tokenizerText = await readOptionalText(tokenizerPath);
  if (tokenizerText === undefined) throw notFound(`${tokenizerPath}: no such file`);
  const tokenizerJson = parseJsonText(tokenizerText, tokenizerPath);
  const configPath = join(modelDir, TOKENIZER_CONFIG_FILE);
  const configText = await readOptionalText(configPath);
  const config = configText === undefined ? {} : parseJsonText(configText, configPath);
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw invalidArgument(`${configPath}: must be a JSON object`);
  }
  const cfg = config as Record<string, unknown>;
  let templateText = pickChatTemplate(cfg.chat_template, configPath);
  let templatePath = configPath;
  if (templateText === undefined) {
    templatePath = join(modelDir, CHAT_TEMPLATE_FILE);
    templateText = await readOptionalText(templatePath);
  }
  let template: Template | undefined;
  if (templateText !== undefined) {
    try {
      template = new Template(templateText);
    } catch (e) {
      throw invalidArgument(
        `${templatePath}: chat template does not parse: ${(e as Error).message}`,
      );
    }
  }
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson as object, cfg);
  } catch (e) {
    if (e instanceof QloradError) throw e;
    throw invalidArgument(`${tokenizerPath}: unsupported tokenizer: ${(e as Error).message}`);
  }
  return new HfTextTokenizer(modelDir, tok, cfg, template);
}
