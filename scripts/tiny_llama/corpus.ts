/**
 * The fixture's text: the country capitals and small sums its datasets teach, and the fixed
 * corpus its BPE tokenizer is learned from (so every token the datasets need exists).
 */

export const CAPITALS: readonly [string, string][] = [
  ["France", "Paris"],
  ["Spain", "Madrid"],
  ["Italy", "Rome"],
  ["Germany", "Berlin"],
  ["Portugal", "Lisbon"],
  ["Greece", "Athens"],
  ["Norway", "Oslo"],
  ["Sweden", "Stockholm"],
  ["Finland", "Helsinki"],
  ["Denmark", "Copenhagen"],
  ["Poland", "Warsaw"],
  ["Austria", "Vienna"],
  ["Hungary", "Budapest"],
  ["Ireland", "Dublin"],
  ["Belgium", "Brussels"],
  ["Netherlands", "Amsterdam"],
  ["Switzerland", "Bern"],
  ["Czechia", "Prague"],
  ["Romania", "Bucharest"],
  ["Ukraine", "Kyiv"],
  ["Iceland", "Reykjavik"],
  ["Russia", "Moscow"],
  ["Turkey", "Ankara"],
  ["Egypt", "Cairo"],
  ["Kenya", "Nairobi"],
  ["Ghana", "Accra"],
  ["Nigeria", "Abuja"],
  ["Morocco", "Rabat"],
  ["Japan", "Tokyo"],
  ["China", "Beijing"],
  ["India", "New Delhi"],
  ["Thailand", "Bangkok"],
  ["Vietnam", "Hanoi"],
  ["Indonesia", "Jakarta"],
  ["Philippines", "Manila"],
  ["South Korea", "Seoul"],
  ["Mongolia", "Ulaanbaatar"],
  ["Nepal", "Kathmandu"],
  ["Iran", "Tehran"],
  ["Iraq", "Baghdad"],
  ["Canada", "Ottawa"],
  ["Mexico", "Mexico City"],
  ["Cuba", "Havana"],
  ["Peru", "Lima"],
  ["Chile", "Santiago"],
  ["Argentina", "Buenos Aires"],
  ["Colombia", "Bogota"],
  ["Australia", "Canberra"],
];

const ENGLISH = `
The quick brown fox jumps over the lazy dog. A small model learns the shape of language from
examples: it reads a sentence, guesses the next word, and adjusts its weights when the guess is
wrong. Over many steps the guesses get better. This is how a language model is trained.

Every country has a capital city, and the capital is where the government meets. People often
ask what the capital of a country is, and a good answer names the city. Numbers are simple too:
when you add two numbers together you get their sum, and the sum of two and three is five.

In the morning the market opens early. Farmers bring apples, bread, cheese and fresh fish to the
square, and the children run between the stalls while their parents talk about the weather. It
rained all night, but now the sky is clear and the sun is warm on the old stone walls.

Questions and answers: What is the capital of the country? The answer is the name of the city.
What is the sum of these numbers? The answer is a number. Please answer in one short sentence.
`;

function capitalSentences(country: string, city: string): string[] {
  return [
    `The capital of ${country} is ${city}.`,
    `${city} is the capital of ${country}.`,
    `What is the capital of ${country}?`,
    `Q: What is the capital of ${country}?\nA: ${city}`,
  ];
}

function sumSentences(a: number, b: number): string[] {
  return [`${a} plus ${b} equals ${a + b}.`, `${a} + ${b} = ${a + b}`, `What is ${a} plus ${b}?`];
}

/** The fixed corpus the tokenizer is learned from. */
export function tokenizerCorpus(): string {
  const parts = [ENGLISH];
  for (const [c, k] of CAPITALS) parts.push(...capitalSentences(c, k));
  for (let a = 0; a < 20; a += 3) for (let b = 1; b < 20; b += 4) parts.push(...sumSentences(a, b));
  return parts.join("\n");
}
