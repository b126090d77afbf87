"""NeedleBench's words: the filler prose of the haystacks, the needles and the prompts, in English and Chinese.

The filler is templated sentences about weather, towns, trade and farming, drawn with a seeded random generator;
its word lists share nothing with the needles (no spice, key, password, violin or person's name), so a keyword in
an answer came from a needle, never from the hay.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


def _words(joined: str) -> list[str]:
    return joined.split("|")


# -- filler ---------------------------------------------------------------------------------------------------------

EN_WORDS: dict[str, list[str]] = {
    "town": _words(
        "Ardmoor|Bellhaven|Corriston|Dunmere|Eastwick|Fallowby|Greyford|Harrowgate|Ivybridge|Kestermouth|Langdale|Millbrook|Northam|Oakhurst|Pellworth|Redcliff|Stonebury|Thornwick|Underhill|Westerby"
    ),
    "season": _words("spring|summer|autumn|winter"),
    "weather": _words("fog|drizzle|frost|sleet|hail|sunshine|a steady breeze|low cloud|mist"),
    "crop": _words("barley|oats|turnips|cabbages|rye|beans|onions|apples|pears|hops|flax"),
    "goods": _words("wool|timber|salt|copper|linen|pottery|rope|leather|candles|glassware|slate"),
    "river": _words("the Avon|the Brede|the Calder|the Dove|the Esk|the Frome|the Lune|the Wear"),
    "count": _words("two|three|four|five|six|seven|eight|nine|ten|twelve|twenty"),
    "day": _words("Monday|Tuesday|Wednesday|Thursday|Friday|Saturday"),
    "direction": _words("north|south|east|west"),
    "trade": _words("carters|weavers|millers|coopers|tanners|masons|fishers|thatchers|smiths"),
    "animal": _words("sheep|goats|geese|cattle|mules|ducks|pigs|hens"),
    "place": _words("the harbour|the market square|the old bridge|the mill pond|the chapel|the toll road"),
}

EN_TEMPLATES: list[str] = [
    "In {season} the wind over {town} usually turns {direction} by the afternoon.",
    "The farmers near {town} planted {crop} along {river} this {season}.",
    "Merchants from {town} sold {goods} at the {day} market for {count} copper pieces a bundle.",
    "A morning of {weather} kept the boats of {town} tied up at {place}.",
    "The {trade} of {town} meet every {day} near {place} to agree on the price of {goods}.",
    "Carts loaded with {goods} left {town} for the {direction} road before dawn.",
    "The {crop} harvest around {town} was late by {count} days after a week of {weather}.",
    "Shepherds drove {animal} down to {river} when the {season} grass grew thin.",
    "The road from {town} to {place} floods whenever {river} rises in {season}.",
    "Most families in {town} keep {count} {animal} and a strip of {crop}.",
    "Traders say the {goods} of {town} is the finest on the {direction} coast.",
    "Every {season} the {trade} of {town} repair the walls around {place}.",
    "A fair is held in {town} on the first {day} of {season}, with stalls of {goods} and {crop}.",
    "Travellers crossing {river} near {town} pay {count} coins at the toll house.",
    "The weather in {town} changed from {weather} to {weather} within a single {day}.",
    "Barges carry {goods} and {crop} down {river} from {town} to the sea.",
    "The council of {town} counted {count} new houses built near {place} this {season}.",
    "In {town} the {trade} and the {trade} share one guild hall by {place}.",
    "Old almanacs from {town} promise {weather} whenever the {animal} come home early.",
    "The {direction} fields of {town} are given to {crop} one year and to {crop} the next.",
    "On {day}s the square of {town} smells of {goods} and wet {animal}.",
    "A bridge of {count} arches crosses {river} just below {town}.",
    "Prices for {goods} rose in {town} after {count} weeks of {weather}.",
    "Children in {town} help the {trade} carry {goods} to {place} after school.",
    "The road {direction} of {town} is lined with orchards of {crop}.",
    "Rain gauges at {place} in {town} recorded {weather} on {count} days last {season}.",
    "The market of {town} opens at dawn on {day} and closes when the {goods} runs out.",
    "Ferries leave {town} for the far bank of {river} {count} times a day in {season}.",
    "Grain from {town} is stored in {count} barns near {place} through the {season}.",
    "The {trade} of {town} trade {goods} for {crop} with the villages to the {direction}.",
]

ZH_WORDS: dict[str, list[str]] = {
    "town": _words(
        "青石镇|柳湾村|白沙镇|东岭村|南坪镇|北溪村|西河镇|桐林村|枫桥镇|松岗村|梅坞镇|竹溪村|石门镇|云岭村|长滩镇|杏花村|清水镇|龙潭村|丰乐镇|安平村"
    ),
    "season": _words("春天|夏天|秋天|冬天"),
    "weather": _words("大雾|小雨|霜冻|冰雹|晴天|阵风|阴天|雷雨|薄雾"),
    "crop": _words("小麦|水稻|玉米|大豆|油菜|棉花|高粱|红薯|花生|荞麦"),
    "goods": _words("丝绸|瓷器|木材|食盐|茶叶|麻布|陶罐|竹篮|铁锅|蜡烛"),
    "river": _words("清江|白河|柳江|青溪|沙河|洛水|汾河|湘江"),
    "count": _words("两|三|四|五|六|七|八|九|十|十二"),
    "day": _words("初一|初五|初十|十五|二十|月底"),
    "direction": _words("东|南|西|北"),
    "trade": _words("木匠|织工|磨坊主|铁匠|渔民|瓦匠|染匠|船夫"),
    "animal": _words("羊|鸭|鹅|牛|猪|鸡|骡子"),
    "place": _words("码头|集市|石桥|磨坊|祠堂|渡口"),
}

ZH_TEMPLATES: list[str] = [
    "{season}的时候，{town}的风到了下午常常转向{direction}边。",
    "{town}附近的农民今年{season}在{river}两岸种下了{crop}。",
    "{town}的商人在{day}的集市上卖{goods}，每捆要{count}个铜钱。",
    "一早上的{weather}让{town}的船都停在了{place}。",
    "{town}的{trade}每逢{day}在{place}旁边商量{goods}的价钱。",
    "天还没亮，装满{goods}的车就从{town}出发往{direction}边去了。",
    "一连几天{weather}，{town}一带的{crop}晚收了{count}天。",
    "{season}草少的时候，牧人把{animal}赶到{river}边吃草。",
    "每到{season}{river}涨水，从{town}到{place}的路就会被淹。",
    "{town}的人家大多养{count}头{animal}，还种一块{crop}。",
    "商人们都说{town}的{goods}是{direction}边最好的。",
    "每年{season}，{town}的{trade}都会去修{place}周围的墙。",
    "{town}在{season}的{day}有庙会，摊位上摆满了{goods}和{crop}。",
    "在{town}附近过{river}的人要在渡口交{count}个铜钱。",
    "{town}的天气在一天之内从{weather}变成了{weather}。",
    "货船载着{town}的{goods}和{crop}沿着{river}一直运到海边。",
    "{town}的乡约统计，今年{season}{place}附近新盖了{count}座房子。",
    "在{town}，{trade}和{trade}共用{place}旁边的一间会馆。",
    "{town}的老黄历上说，{animal}早早回圈的日子就会有{weather}。",
    "{town}{direction}边的田地一年种{crop}，下一年种{crop}。",
    "逢{day}的时候，{town}的街上满是{goods}和{animal}的味道。",
    "一座{count}孔的石桥横跨{river}，就在{town}的下游。",
    "连着{count}个星期{weather}以后，{town}的{goods}涨价了。",
    "{town}的孩子放学后帮{trade}把{goods}搬到{place}。",
    "{town}{direction}边的路两旁种满了{crop}。",
    "去年{season}，{town}{place}的雨量筒记下了{count}天{weather}。",
    "{town}的集市{day}天一亮就开，{goods}卖完了才收摊。",
    "{season}里，从{town}到{river}对岸的渡船一天开{count}趟。",
    "整个{season}，{town}的粮食都存放在{place}附近的{count}座谷仓里。",
    "{town}的{trade}拿{goods}跟{direction}边的村子换{crop}。",
]

FILLER = {"en": (EN_TEMPLATES, EN_WORDS), "zh": (ZH_TEMPLATES, ZH_WORDS)}
SEPARATOR = {"en": " ", "zh": ""}  # what joins sentences: Chinese puts no space after 。


def filler_sentences(lang: str, seed: int) -> Iterator[str]:
    """Endless filler sentences, the same for the same language and seed."""
    templates, words = FILLER[lang]
    rng = random.Random(f"needlebench-haystack-{lang}-{seed}")
    while True:
        template = rng.choice(templates)
        yield _fill(template, words, rng)


def _fill(template: str, words: dict[str, list[str]], rng: random.Random) -> str:
    """Each slot drawn anew, also when a template names one twice ("from {weather} to {weather}")."""
    out, rest = [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        out += [before, rng.choice(words[slot])]
    return "".join([*out, rest])


# -- needles --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A retrieval needle: the sentence hidden in the hay, the question that asks for it, the word the answer needs."""

    needle: str
    question: str
    keyword: str


EN_FACTS: list[Fact] = [
    Fact(
        "The secret ingredient of Hidden Valley's soup is saffron.",
        "What is the secret ingredient of Hidden Valley's soup?",
        "saffron",
    ),
    Fact(
        "The password to the lighthouse on Gull Island is Marigold.",
        "What is the password to the lighthouse on Gull Island?",
        "Marigold",
    ),
    Fact(
        "Professor Anwen Hale keeps her spare key inside a blue teapot.",
        "Where does Professor Anwen Hale keep her spare key?",
        "teapot",
    ),
    Fact(
        "The ship Silver Heron carried violins on its last voyage.",
        "What did the ship Silver Heron carry on its last voyage?",
        "violins",
    ),
    Fact(
        "The favourite game of the painter Ottilie Brand is chess.",
        "What is the favourite game of the painter Ottilie Brand?",
        "chess",
    ),
    Fact(
        "The clockmaker Edmund Vance named his cat Pumpernickel.",
        "What did the clockmaker Edmund Vance name his cat?",
        "Pumpernickel",
    ),
    Fact(
        "The winning kite at the Larkspur festival was shaped like a dragonfly.",
        "What shape was the winning kite at the Larkspur festival?",
        "dragonfly",
    ),
    Fact(
        "The astronomer Petra Lindqvist discovered a comet while drinking cocoa.",
        "What was the astronomer Petra Lindqvist drinking when she discovered a comet?",
        "cocoa",
    ),
]

ZH_FACTS: list[Fact] = [
    Fact("隐谷汤的秘密配料是藏红花。", "隐谷汤的秘密配料是什么？", "藏红花"),
    Fact("鸥岛灯塔的口令是金盏花。", "鸥岛灯塔的口令是什么？", "金盏花"),
    Fact("何安雯教授把备用钥匙藏在一个蓝色茶壶里。", "何安雯教授把备用钥匙藏在哪里？", "茶壶"),
    Fact("银鹭号最后一次出航时运的是小提琴。", "银鹭号最后一次出航时运的是什么？", "小提琴"),
    Fact("画家白若溪最喜欢的游戏是围棋。", "画家白若溪最喜欢的游戏是什么？", "围棋"),
    Fact("钟表匠万德明给他的猫取名叫芝麻糊。", "钟表匠万德明给他的猫取了什么名字？", "芝麻糊"),
    Fact("紫燕风筝节上获胜的风筝做成了蜻蜓的样子。", "紫燕风筝节上获胜的风筝是什么样子的？", "蜻蜓"),
    Fact("天文学家林佩然是在喝可可的时候发现彗星的。", "天文学家林佩然发现彗星的时候在喝什么？", "可可"),
]

FACTS = {"en": EN_FACTS, "zh": ZH_FACTS}

# reasoning needles: a chain of kinship ("A is B's father", "B is C's mother" …) whose eldest end is the answer
EN_NAMES: list[str] = _words(
    "Mara Quinlan|Tobias Reyes|Ingrid Solberg|Felix Okafor|Hazel Whitcombe|Ronan Delacroix|Yusuf Karim|"
    "Clara Benedetti|Owen Mackay|Lucia Ferreira|Declan Hart|Nadia Volkova|Simon Achebe|Greta Lindholm|"
    "Marcus Bell|Priya Natarajan|Elliot Crane|Sofia Marquez"
)
ZH_NAMES: list[str] = _words(
    "韩思远|魏秋萍|邵明轩|蒋晓岚|葛文博|范雨桐|陶志强|汪佳琪|谭嘉树|邹若兰|石浩然|贺婉清|柏子墨|龚欣怡|严立诚|卢梦瑶|秦书航|苗语嫣"
)
NAMES = {"en": EN_NAMES, "zh": ZH_NAMES}

# {elder} is always the older of the two
EN_KINSHIP_TEMPLATES = ["{elder} is {younger}'s {relation}.", "{younger}'s {relation} is {elder}."]
EN_RELATIONS = ["father", "mother", "grandfather", "grandmother"]
ZH_KINSHIP_TEMPLATES = ["{elder}是{younger}的{relation}。", "{younger}的{relation}是{elder}。"]
ZH_RELATIONS = ["父亲", "母亲", "爷爷", "奶奶", "外公", "外婆"]
KINSHIP = {"en": (EN_KINSHIP_TEMPLATES, EN_RELATIONS), "zh": (ZH_KINSHIP_TEMPLATES, ZH_RELATIONS)}

# -- prompts --------------------------------------------------------------------------------------------------------

PROMPTS = {
    "en": (
        "This is a test of long-text capability. Read the long document below first, then answer the question "
        "after it from what the document says.\nHere is the document:\n\n<Document>\n{document}\n</Document>\n\n"
        "Question, to be answered from the document: {question}\n"
    ),
    "zh": (
        "这是一个长文本能力的测试。请先阅读下面的长文档，再根据文档中的信息回答文档后面的问题。\n文档如下：\n\n"
        "<文档>\n{document}\n</文档>\n\n请根据文档回答：{question}\n"
    ),
}

MULTI_QUESTION = {
    "en": "Answer each of these questions:\n{questions}",
    "zh": "请逐一回答下面的问题：\n{questions}",
}

REASONING_QUESTION = {
    "en": (
        "Following the family relations in the document, who is the eldest relative that {last} can be traced "
        "back to?\nFor example, if Ann's mother is Bea and Bea's father is Cal, and the document says nothing more "
        "about them, Ann's eldest relative is \\boxed{{Cal}}. Names say nothing about gender or family names here; "
        "only who is older counts. End your answer with the name inside \\boxed{{}}."
    ),
    "zh": (
        "根据文档中的亲属关系，{last}能够向上追溯到的最年长的亲人是谁？\n例如：如果小安的母亲是小贝，小贝的父亲是小凯，"
        "文档中没有更多关于他们的亲属信息，那么小安最年长的亲人就是\\boxed{{小凯}}。不必考虑名字的性别和姓氏，"
        "只看谁更年长。回答的最后请把名字写在\\boxed{{}}中。"
    ),
}
