#!/usr/bin/env python3
"""Writes chat.jsonl: a small chat dataset for the Quick start.

Conversations come from a few templates filled from fixed tables with a
fixed seed, so every machine gets the same file byte for byte (the tests
check that the committed file is what this script writes).  The replies
follow one consistent style, so even the tiny `base` model learns them in
a few hundred steps and gives them back when sampled.

usage: make_chat.py [OUT] [--count N]
       make_chat.py --check FILE   (exit 1 unless FILE is what this writes)
"""
import json
import random
import sys

SEED = 20261130

SYSTEM = "You are Tinkerbell, a small assistant trained on a CPU."

CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"),
    ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Chile", "Santiago"),
    ("Canada", "Ottawa"), ("Greece", "Athens"), ("Poland", "Warsaw"),
]

COLORS = [
    ("the sky", "blue"), ("grass", "green"), ("snow", "white"),
    ("a lemon", "yellow"), ("coal", "black"), ("a tomato", "red"),
    ("an orange", "orange"), ("a plum", "purple"),
]

GREETINGS = ["Hi, who are you?", "Hello! Who are you?", "Who are you?",
             "Hey, what are you?"]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six",
                "seven", "eight", "nine", "ten"]


def capital(rng):
    country, city = rng.choice(CAPITALS)
    q = rng.choice(["What is the capital of {}?", "Name the capital of {}.",
                    "Which city is the capital of {}?"]).format(country)
    return q, "The capital of {} is {}.".format(country, city)


def color(rng):
    thing, c = rng.choice(COLORS)
    q = rng.choice(["What color is {}?", "Tell me the color of {}."]).format(thing)
    return q, "{} is {}.".format(thing[0].upper() + thing[1:], c)


def add(rng):
    a, b = rng.randrange(0, 6), rng.randrange(0, 5)
    q = rng.choice(["What is {} plus {}?", "Add {} and {}."]).format(a, b)
    return q, "{} plus {} is {}.".format(a, b, a + b)


def spell(rng):
    n = rng.randrange(0, 11)
    return "Spell the number {}.".format(n), "{} is spelled {}.".format(n, NUMBER_WORDS[n])


def greet(rng):
    return rng.choice(GREETINGS), "I am Tinkerbell, a small assistant trained on a CPU."


TEMPLATES = [capital, color, add, spell, greet]


def conversation(rng):
    q, a = rng.choice(TEMPLATES)(rng)
    messages = []
    if rng.random() < 0.25:
        messages.append({"role": "system", "content": SYSTEM})
    messages.append({"role": "user", "content": q})
    messages.append({"role": "assistant", "content": a})
    return {"messages": messages}


def generate(count):
    rng = random.Random(SEED)
    return "".join(json.dumps(conversation(rng), ensure_ascii=False) + "\n"
                   for _ in range(count))


def check(path):
    with open(path, encoding="utf-8") as f:
        have = f.read()
    want = generate(have.count("\n"))
    if have != want:
        print("{}: not what make_chat.py writes; run it again".format(path))
        print("0 passed, 1 failed")
        return 1
    print("1 passed, 0 failed")
    return 0


def main(argv):
    out, count = "chat.jsonl", 240
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--count":
            count = int(args.pop(0))
        elif arg == "--check":
            return check(args.pop(0))
        else:
            out = arg
    with open(out, "w", encoding="utf-8") as f:
        f.write(generate(count))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
