// Original file: proto/qlorad/v1/qlorad.proto


export interface GeneratedText {
  'text'?: (string);
  'token_ids'?: (number)[];
}

export interface GeneratedText__Output {
  'text': (string);
  'token_ids': (number)[];
}
