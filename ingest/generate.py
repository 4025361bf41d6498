"""A deterministic synthetic e-commerce world: catalogue, users and a half year of their behaviour.

Why it exists
-------------
The project needs data that (a) needs no download, (b) is big or small on demand, (c) is byte-identical for the
same seed, and above all (d) has *known* latent structure that shows in the text, so that we can check that a
text tower really earns its keep: on items released after training ("cold" items) an ID-only model knows
nothing, while a model that reads titles and descriptions can place them next to the warm items they resemble.

Latent structure (what a good model can recover)
------------------------------------------------
* 12 product **categories** (outdoor, kitchen, skincare, ...). Each has its own English and parallel Chinese
  vocabulary of product nouns, materials and use cases, and 3-6 invented **brands**.
* Inside each category 3-4 latent **styles** (e.g. ultralight / family / expedition / budget), each with its own
  adjectives (English and Chinese), a "what it values" phrase and a price multiplier. Brands lean to styles.
* An **item** is (category, style, brand, product noun). Its title is brand + style adjectives (+ material) +
  noun (+ a model code), its description 2-3 sentences built from the same words plus generic filler; a share
  of items (``chinese_share``) is written in Chinese from the parallel vocabulary. Price is lognormal by
  category, style (premium styles cost more) and noun. Popularity is Zipf-like inside a category. Most items
  exist from the start, ~20% are released during the training period and ~10% after ``valid_start`` (the cold
  items).
* A **user** has a taste: a mixture over 1-3 categories (one dominant), a preferred style (and sometimes a
  second one) per category, a preferred price level and a price sensitivity. The taste *drifts*: one interest
  grows over the window, sometimes a brand-new category appears late. Profile text (written at sign-up, so
  from the early taste; ~20% empty; a share in Chinese) and recent search queries (from the late taste) are
  derived from it. Age band and region correlate weakly with the dominant category.
* **Behaviour**: each user has a heavy-tailed activity level and an active period (~8% of users are new and
  only appear after ``valid_start``). Events come in sessions. Each view picks a category from the current
  taste, then an item already released at that moment with probability
  ∝ popularity^a · exp(style match + price fit + language match + recency bonus for newly released items).
  Some views re-view an earlier item; a view turns into a purchase more often when the style matches and much
  more often on a re-view.

Files written (all UTF-8 CSV, timestamps ISO 8601 UTC with a trailing Z):
``items.csv`` (item_id, title, description, category, brand, price, release_time),
``users.csv`` (user_id, profile_text, search_queries, age_band, region),
``interactions.csv`` (user_id, item_id, timestamp, event, weight) and ``world.json`` (dates, categories,
cold items, new users, counts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

__all__ = ["generate_world", "CATEGORIES"]

START = np.datetime64("2024-01-01T00:00:00", "s")
DAY = 86_400
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_BASE = np.array([0.18, 0.30, 0.24, 0.16, 0.12])
REGIONS = ("north", "south", "east", "west", "central")

# Behaviour knobs (kept here so the docstring's story can be checked against numbers).
POP_ZIPF = 0.9          # popularity of the r-th item in a category ∝ (r+1)^-POP_ZIPF
POP_EXP = 0.8           # the "a" in popularity^a
STYLE_MAIN = 1.8        # logit bonus for the user's preferred style
STYLE_SECOND = 0.6      # ... and for a second liked style
LANG_BONUS = 0.5        # users lean a little towards items in their own language
RECENCY_BONUS = 2.0     # logit bonus for a just-released item, decaying with RECENCY_TAU
RECENCY_TAU = 14 * DAY
REPEAT_P = 0.12         # share of views that re-view an earlier item of the same user
NEW_USER_SHARE = 0.08
EMPTY_PROFILE_SHARE = 0.20
COLD_ITEM_SHARE = 0.10
SPREAD_ITEM_SHARE = 0.20


# --------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Style:
    key: str
    en: tuple[str, ...]      # adjectives
    zh: tuple[str, ...]
    value_en: str            # what a buyer of this style values
    value_zh: str
    price: float             # price multiplier


@dataclasses.dataclass(frozen=True)
class Category:
    key: str
    name: str
    zh_name: str
    price: float                              # median price of the category
    nouns: tuple[tuple[str, str], ...]        # (english, chinese)
    materials: tuple[tuple[str, str], ...]
    uses: tuple[tuple[str, str], ...]
    styles: tuple[Style, ...]
    brands: tuple[tuple[str, tuple[int, ...]], ...]   # (name, styles it leans to)
    personas: tuple[tuple[str, ...], tuple[str, ...]]  # (english, chinese)
    interests: tuple[tuple[str, ...], tuple[str, ...]]
    ages: tuple[int, ...]                      # indices into AGE_BANDS this category leans to
    region: int                                # index into REGIONS it leans to


def _pairs(spec: str) -> tuple[tuple[str, str], ...]:
    out = []
    for part in spec.split(";"):
        part = part.strip()
        if part:
            en, zh = part.split("=")
            out.append((en.strip(), zh.strip()))
    return tuple(out)


def _words(spec: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in spec.split(",") if w.strip())


def _style(key, en, zh, value_en, value_zh, price) -> Style:
    return Style(key, _words(en), _words(zh), value_en, value_zh, price)


CATEGORIES: tuple[Category, ...] = (
    Category(
        "outdoor", "Outdoor & Camping", "户外露营", 55.0,
        _pairs("tent=帐篷; sleeping bag=睡袋; camping stove=露营炉; headlamp=头灯; hiking backpack=登山包;"
               "trekking poles=登山杖; camping chair=露营椅; water filter=户外净水器; camping lantern=营地灯;"
               "sleeping pad=防潮垫; hammock=吊床; cooler box=保温箱; rain jacket=冲锋衣"),
        _pairs("ripstop nylon=防撕裂尼龙; aluminium alloy=铝合金; waterproof polyester=防水涤纶; titanium=钛合金;"
               "down fill=羽绒"),
        _pairs("weekend camping trips=周末露营; long-distance hiking=长途徒步; backpacking=背包旅行;"
               "family campsites=家庭露营; mountain trekking=登山"),
        (_style("ultralight", "ultralight, packable, minimalist", "超轻, 便携, 极简", "low pack weight", "轻量化", 1.35),
         _style("family", "spacious, family-size, easy-setup", "大空间, 家庭款, 速开", "comfort and easy setup",
                "舒适和便捷", 1.0),
         _style("expedition", "expedition, 4-season, rugged", "专业, 四季, 耐用", "reliability in harsh weather",
                "恶劣天气下的可靠性", 1.9),
         _style("budget", "budget, basic, value", "入门, 基础款, 实惠", "a low price", "性价比", 0.55)),
        (("NorthPeak", (0, 2)), ("TrailHaven", (1,)), ("Summitry", (2,)), ("CampNest", (1, 3)), ("PineLoop", (3, 0))),
        (("Weekend hiker", "Camping enthusiast", "Backpacker", "Trail runner and camper"),
         ("周末徒步爱好者", "露营达人", "背包客")),
        (("camping gear", "hiking equipment", "outdoor kit"), ("露营装备", "户外用品", "徒步装备")),
        (1, 2), 3,
    ),
    Category(
        "kitchen", "Kitchen & Dining", "厨房餐饮", 30.0,
        _pairs("frying pan=平底锅; chef's knife=厨师刀; cutting board=砧板; stockpot=汤锅; mixing bowl=搅拌碗;"
               "spatula=锅铲; food container=保鲜盒; kettle=烧水壶; baking tray=烤盘; dinner plate=餐盘;"
               "vacuum flask=保温杯; salad spinner=沙拉脱水器; rice cooker=电饭煲"),
        _pairs("cast iron=铸铁; stainless steel=不锈钢; bamboo=竹制; ceramic=陶瓷; borosilicate glass=高硼硅玻璃;"
               "non-stick coating=不粘涂层"),
        _pairs("everyday cooking=日常烹饪; meal prep=备餐; family dinners=家庭聚餐; weekend baking=周末烘焙"),
        (_style("professional", "professional, chef-grade, heavy-duty", "专业, 主厨级, 加厚",
                "restaurant-level performance", "专业级表现", 1.8),
         _style("minimalist", "minimalist, Nordic, matte", "极简, 北欧风, 哑光", "clean design", "简洁设计", 1.2),
         _style("budget", "everyday, basic, value", "家用, 基础款, 实惠", "a low price", "性价比", 0.6),
         _style("colourful", "colourful, cute, pastel", "彩色, 可爱, 马卡龙色", "a cheerful kitchen", "厨房的好心情", 0.9)),
        (("IronHearth", (0,)), ("Kitcha", (1,)), ("HomeBasics", (2,)), ("PopPantry", (3,)), ("Saltgrain", (0, 1))),
        (("Home cook", "Keen baker", "Meal-prep fan"), ("居家厨师", "烘焙爱好者", "做饭达人")),
        (("kitchenware", "cookware", "kitchen tools"), ("厨房用品", "锅具", "厨具")),
        (2, 3), 2,
    ),
    Category(
        "skincare", "Beauty & Skincare", "美妆护肤", 22.0,
        _pairs("face cream=面霜; serum=精华液; sunscreen=防晒霜; cleanser=洗面奶; toner=爽肤水; sheet mask=面膜;"
               "lip balm=润唇膏; eye cream=眼霜; body lotion=身体乳; makeup remover=卸妆水; hand cream=护手霜;"
               "facial mist=保湿喷雾"),
        _pairs("hyaluronic acid=玻尿酸; niacinamide=烟酰胺; green tea extract=绿茶精华; ceramides=神经酰胺;"
               "vitamin C=维生素C; centella=积雪草"),
        _pairs("dry skin=干性肌肤; sensitive skin=敏感肌; morning routines=早间护肤; night-time repair=夜间修护"),
        (_style("natural", "natural, organic, fragrance-free", "天然, 有机, 无香", "gentle ingredients", "温和成分", 1.1),
         _style("luxury", "luxury, anti-aging, premium", "奢华, 抗老, 高端", "visible results", "明显效果", 2.2),
         _style("budget", "drugstore, basic, hydrating", "平价, 基础, 补水", "a low price", "性价比", 0.5),
         _style("glow", "glow, dewy, radiant", "水光, 透亮, 少女", "a dewy glow", "水润光泽", 0.9)),
        (("PureLeaf", (0,)), ("Lumessa", (1,)), ("DailyDerm", (2, 0)), ("GlowBunny", (3,)), ("Aquaveil", (3, 1))),
        (("Skincare enthusiast", "Beauty lover", "Self-care fan"), ("护肤达人", "美妆爱好者", "精致女孩")),
        (("skincare", "beauty products", "skin care routines"), ("护肤品", "美妆产品", "护肤")),
        (0, 1), 2,
    ),
    Category(
        "electronics", "Electronics Accessories", "数码配件", 25.0,
        _pairs("phone case=手机壳; charging cable=数据线; power bank=充电宝; wireless earbuds=无线耳机;"
               "USB-C hub=扩展坞; wall charger=充电器; screen protector=钢化膜; laptop stand=笔记本支架;"
               "Bluetooth speaker=蓝牙音箱; wireless mouse=无线鼠标; mechanical keyboard=机械键盘;"
               "smartwatch band=手表表带; phone holder=手机支架"),
        _pairs("braided nylon=编织尼龙; aluminium=铝合金; tempered glass=钢化玻璃; silicone=硅胶;"
               "recycled plastic=再生塑料"),
        _pairs("working from home=居家办公; business travel=出差旅行; gaming=打游戏; daily commuting=通勤"),
        (_style("pro", "fast-charging, high-speed, pro", "快充, 高速, 专业版", "performance", "性能", 1.6),
         _style("gaming", "RGB, gaming, esports", "炫彩, 电竞, 游戏", "a flashy setup", "酷炫体验", 1.3),
         _style("budget", "basic, budget, universal", "平价, 基础款, 通用", "a low price", "性价比", 0.5),
         _style("slim", "slim, magnetic, minimalist", "超薄, 磁吸, 简约", "a tidy desk and pocket", "轻薄简洁", 1.1)),
        (("VoltEdge", (0,)), ("ByteKnight", (1,)), ("Cablo", (2,)), ("Slimtek", (3,)), ("Ampora", (0, 3)),
         ("PixelFox", (1, 2))),
        (("Tech enthusiast", "Gamer", "Remote worker"), ("数码爱好者", "游戏玩家", "远程办公族")),
        (("gadgets", "phone accessories", "tech accessories"), ("数码配件", "手机配件", "电子产品")),
        (0, 1), 1,
    ),
    Category(
        "toys", "Toys & Games", "玩具游戏", 25.0,
        _pairs("building blocks=积木; jigsaw puzzle=拼图; plush toy=毛绒玩具; board game=桌游;"
               "remote control car=遥控车; doll=娃娃; toy train=小火车; kite=风筝; science kit=科学实验套装;"
               "art set=绘画套装; stacking tower=叠叠乐; water gun=水枪"),
        _pairs("solid wood=实木; non-toxic plastic=无毒塑料; soft cotton=柔软棉; recycled cardboard=环保纸板"),
        _pairs("preschool learning=早教; family game night=家庭游戏之夜; birthday gifts=生日礼物;"
               "outdoor play=户外玩耍"),
        (_style("educational", "educational, STEM, Montessori", "益智, 科学, 蒙氏", "learning through play",
                "寓教于乐", 1.2),
         _style("collectible", "collectible, limited-edition, deluxe", "收藏, 限量版, 豪华", "rare finds",
                "收藏价值", 1.8),
         _style("toddler", "toddler, soft, first", "幼儿, 软萌, 启蒙", "safety for little ones", "宝宝安全", 0.9),
         _style("party", "party, mini, fun", "派对, 迷你, 趣味", "cheap fun", "好玩又便宜", 0.5)),
        (("BrightBlocks", (0,)), ("TinyTots", (2,)), ("Funhaus", (3,)), ("Vaultoys", (1,)), ("Wonderkit", (0, 1))),
        (("Parent of two", "Board game fan", "Toy collector"), ("二孩家长", "桌游迷", "玩具收藏者")),
        (("toys", "games for kids", "gifts for children"), ("玩具", "儿童游戏", "儿童礼物")),
        (2,), 4,
    ),
    Category(
        "pets", "Pet Supplies", "宠物用品", 20.0,
        _pairs("dog bed=狗窝; cat tree=猫爬架; dog leash=牵引绳; dog food=狗粮; cat litter=猫砂; pet bowl=宠物碗;"
               "chew toy=磨牙玩具; pet carrier=宠物包; grooming brush=宠物梳; cat scratcher=猫抓板;"
               "pet shampoo=宠物沐浴露; pet water fountain=宠物饮水机"),
        _pairs("memory foam=记忆棉; sisal=剑麻; natural rubber=天然橡胶; stainless steel=不锈钢;"
               "grain-free formula=无谷配方"),
        _pairs("indoor cats=室内猫; large dogs=大型犬; puppies=幼犬; daily walks=日常遛狗"),
        (_style("natural", "organic, grain-free, natural", "天然, 无谷, 有机", "healthy pets", "宠物健康", 1.6),
         _style("smart", "smart, automatic, app-controlled", "智能, 自动, 远程控制", "convenience", "省心", 1.8),
         _style("cozy", "cute, cozy, fluffy", "可爱, 温暖, 毛绒", "cozy naps", "温馨舒适", 1.0),
         _style("budget", "bulk, basic, value", "大包装, 基础款, 实惠", "a low price", "性价比", 0.55)),
        (("Pawsome", (2, 0)), ("WhiskerWorks", (2,)), ("BarkTech", (1,)), ("FurNest", (0,)), ("KibbleCo", (3,))),
        (("Dog owner", "Cat parent", "Pet lover"), ("铲屎官", "养狗人", "宠物爱好者")),
        (("pet supplies", "pet care", "things for my pets"), ("宠物用品", "猫狗用品", "宠物护理")),
        (1,), 0,
    ),
    Category(
        "office", "Office & Stationery", "办公文具", 12.0,
        _pairs("notebook=笔记本; gel pen=中性笔; fountain pen=钢笔; desk organizer=桌面收纳盒; stapler=订书机;"
               "sticky notes=便利贴; planner=手帐本; highlighter=荧光笔; office chair=办公椅; desk lamp=台灯;"
               "file folder=文件夹; whiteboard=白板; mechanical pencil=自动铅笔"),
        _pairs("recycled paper=再生纸; leather=皮革; brass=黄铜; breathable mesh=网布; acrylic=亚克力"),
        _pairs("daily note-taking=日常记录; studying=学习; office work=办公; bullet journaling=手帐记录"),
        (_style("executive", "executive, leather-bound, classic", "商务, 真皮, 经典", "a professional look",
                "商务质感", 1.8),
         _style("cute", "kawaii, pastel, cute", "可爱, 马卡龙, 卡通", "a fun desk", "可爱桌面", 0.8),
         _style("minimalist", "minimalist, Japanese-style, clean", "极简, 日式, 简约", "focus", "专注", 1.1),
         _style("bulk", "bulk, school, basic", "学生, 大容量, 基础款", "a low price", "性价比", 0.5)),
        (("Inkwell", (0,)), ("PaperPlum", (1,)), ("DeskCraft", (2, 0)), ("Notable", (3,)), ("Quillon", (2,))),
        (("Stationery addict", "Student", "Office worker"), ("文具控", "学生党", "上班族")),
        (("stationery", "desk supplies", "office supplies"), ("文具", "办公用品", "桌面好物")),
        (0, 1), 2,
    ),
    Category(
        "fitness", "Sports & Fitness", "运动健身", 30.0,
        _pairs("yoga mat=瑜伽垫; dumbbells=哑铃; resistance bands=弹力带; foam roller=泡沫轴; running shoes=跑鞋;"
               "jump rope=跳绳; kettlebell=壶铃; gym bag=健身包; sports bottle=运动水壶; fitness tracker=运动手环;"
               "pull-up bar=引体向上杆; compression leggings=紧身裤"),
        _pairs("natural rubber=天然橡胶; neoprene=氯丁橡胶; cast iron=铸铁; breathable mesh=透气网面; spandex=氨纶"),
        _pairs("home workouts=居家健身; marathon training=马拉松训练; yoga classes=瑜伽课; strength training=力量训练"),
        (_style("pro", "pro, competition, performance", "专业, 竞技, 高性能", "performance", "运动表现", 1.7),
         _style("mindful", "eco-friendly, non-slip, mindful", "环保, 防滑, 静心", "a calm practice", "身心平衡", 1.1),
         _style("beginner", "beginner, adjustable, compact", "入门, 可调节, 小巧", "working out at home", "居家锻炼", 0.7)),
        (("IronPulse", (0,)), ("ZenFlow", (1,)), ("StrideLab", (0, 2)), ("FitNook", (2,))),
        (("Gym regular", "Runner", "Yoga practitioner"), ("健身爱好者", "跑步爱好者", "瑜伽练习者")),
        (("fitness gear", "workout equipment", "sports gear"), ("健身装备", "运动器材", "运动装备")),
        (0, 1), 3,
    ),
    Category(
        "baby", "Baby & Maternity", "母婴用品", 25.0,
        _pairs("baby bottle=奶瓶; diapers=纸尿裤; stroller=婴儿车; baby carrier=婴儿背带; pacifier=安抚奶嘴; bib=围兜;"
               "baby wipes=湿巾; crib sheet=婴儿床单; teether=牙胶; high chair=宝宝餐椅; baby monitor=婴儿监护器;"
               "swaddle blanket=包被"),
        _pairs("organic cotton=有机棉; food-grade silicone=食品级硅胶; BPA-free plastic=无双酚A塑料;"
               "bamboo fibre=竹纤维"),
        _pairs("newborns=新生儿; night feeds=夜奶; travel with baby=带娃出行; daily care=日常护理"),
        (_style("organic", "organic, gentle, hypoallergenic", "有机, 温和, 低敏", "gentle care", "温和呵护", 1.4),
         _style("designer", "premium, Scandinavian, designer", "高端, 北欧, 设计师款", "style and safety",
                "颜值与安全", 2.0),
         _style("value", "value-pack, everyday, basic", "量贩装, 日常, 实惠", "a low price", "性价比", 0.6)),
        (("LittleSprout", (0,)), ("NordBaby", (1,)), ("CuddleCo", (0, 1)), ("BabyBasics", (2,))),
        (("New parent", "Expecting mum", "Parent of a toddler"), ("新手爸妈", "准妈妈", "宝妈")),
        (("baby products", "baby care", "nursery essentials"), ("母婴用品", "宝宝用品", "婴儿用品")),
        (1,), 1,
    ),
    Category(
        "tools", "Tools & Home Improvement", "五金工具", 35.0,
        _pairs("cordless drill=电钻; screwdriver set=螺丝刀套装; tape measure=卷尺; hammer=锤子; toolbox=工具箱;"
               "spirit level=水平仪; wrench set=扳手套装; work gloves=劳保手套; glue gun=热熔胶枪; step ladder=人字梯;"
               "utility knife=美工刀; orbital sander=砂光机"),
        _pairs("chrome vanadium steel=铬钒钢; fibreglass=玻璃纤维; hardened steel=淬火钢; rubber grip=橡胶手柄"),
        _pairs("home repairs=家庭维修; DIY projects=手工改造; woodworking=木工; furniture assembly=家具组装"),
        (_style("pro", "professional, heavy-duty, industrial", "专业, 重型, 工业级", "durability", "耐用", 1.9),
         _style("diy", "DIY, multi-purpose, household", "家用, 多功能, 入门", "handy fixes", "居家维修", 0.9),
         _style("compact", "compact, portable, lightweight", "迷你, 便携, 轻便", "small spaces", "小巧收纳", 1.0)),
        (("ForgeMaster", (0,)), ("HandyPro", (1,)), ("BoltWorks", (0, 1)), ("TinkerTools", (2,))),
        (("DIY enthusiast", "Weekend woodworker", "Homeowner"), ("DIY爱好者", "木工爱好者", "房主")),
        (("tools", "DIY gear", "hardware"), ("五金工具", "工具", "装修工具")),
        (2, 3), 0,
    ),
    Category(
        "tea", "Tea & Coffee", "茶与咖啡", 20.0,
        _pairs("green tea=绿茶; oolong tea=乌龙茶; coffee beans=咖啡豆; pour-over kettle=手冲壶; teapot=茶壶;"
               "French press=法压壶; coffee grinder=磨豆机; matcha powder=抹茶粉; tea cup set=茶杯套装;"
               "drip coffee bags=挂耳咖啡; pu-erh tea=普洱茶; travel mug=随行杯"),
        _pairs("Yixing clay=紫砂; glass=玻璃; single-origin Arabica=单一产地阿拉比卡; ceramic=陶瓷;"
               "hand-picked leaves=手工采摘茶叶"),
        _pairs("slow mornings=慢生活的早晨; afternoon tea=下午茶; the office=办公室; gifting=送礼"),
        (_style("traditional", "traditional, handmade, aged", "传统, 手工, 陈年", "authentic taste", "地道口感", 1.6),
         _style("specialty", "specialty, single-origin, light-roast", "精品, 单品, 浅烘", "craft coffee",
                "精品咖啡", 1.5),
         _style("convenient", "instant, convenient, everyday", "速溶, 便捷, 日常", "speed", "便捷", 0.6),
         _style("gift", "gift-box, premium, elegant", "礼盒, 高档, 雅致", "a memorable gift", "送礼体面", 2.0)),
        (("JadeHill", (0, 3)), ("RoastRiver", (1,)), ("LeafLoom", (0,)), ("Brewtide", (2, 1)),
         ("CamelliaHouse", (3,))),
        (("Tea lover", "Coffee geek", "Morning ritual fan"), ("茶友", "咖啡爱好者", "精致生活家")),
        (("tea", "coffee gear", "brewing equipment"), ("茶叶", "咖啡器具", "茶具")),
        (3, 4), 2,
    ),
    Category(
        "decor", "Home Decor", "家居装饰", 30.0,
        _pairs("throw pillow=抱枕; scented candle=香薰蜡烛; wall art=装饰画; vase=花瓶; area rug=地毯;"
               "floor lamp=落地灯; wall clock=挂钟; photo frame=相框; artificial plant=仿真植物; curtains=窗帘;"
               "wall mirror=装饰镜; storage basket=收纳篮"),
        _pairs("linen=亚麻; rattan=藤编; ceramic=陶瓷; velvet=丝绒; solid wood=实木; brass=黄铜"),
        _pairs("living rooms=客厅; bedrooms=卧室; small apartments=小户型; housewarming gifts=乔迁礼物"),
        (_style("boho", "boho, rattan, woven", "波西米亚, 藤编, 编织", "a relaxed vibe", "随性氛围", 1.0),
         _style("scandi", "Scandinavian, minimalist, neutral", "北欧, 极简, 素色", "calm spaces", "简约空间", 1.2),
         _style("luxe", "luxe, velvet, gold-accent", "轻奢, 丝绒, 金色", "a glamorous touch", "轻奢质感", 1.8),
         _style("vintage", "vintage, retro, rustic", "复古, 怀旧, 田园", "character", "复古韵味", 1.0)),
        (("HyggeLane", (1,)), ("Boholiv", (0,)), ("GildNest", (2,)), ("OldOak", (3,)), ("Lumora", (1, 2))),
        (("Interior design fan", "New homeowner", "Apartment decorator"), ("家居控", "新房业主", "租房改造达人")),
        (("home decor", "interior pieces", "decor for my flat"), ("家居装饰", "软装", "家居好物")),
        (1, 2), 4,
    ),
)

FILLER_EN = (
    "Ships in recyclable packaging.", "Backed by a one-year warranty.", "A thoughtful gift for friends and family.",
    "Easy to clean and simple to store.", "Available in several colours.", "Free returns within 30 days.",
    "Rated highly by customers for everyday use.", "Quality checked before shipping.",
    "Limited stock available this season.", "Comes with a simple quick-start guide.",
)
FILLER_ZH = (
    "支持七天无理由退换。", "包装环保，送礼自用皆宜。", "多种颜色可选。", "清洗方便，收纳不占地方。", "品质保证，售后无忧。",
    "现货速发。", "限时优惠中。", "出厂前经过严格质检。",
)
PROFILE_FILLER_EN = ("Lives in a small apartment.", "Shops mostly on weekends.", "Likes fast delivery.",
                     "Reads reviews before buying.", "Buys gifts for family a lot.")
PROFILE_FILLER_ZH = ("住小户型。", "喜欢周末逛网店。", "希望发货快。", "买东西前会先看评价。", "经常给家人买礼物。")


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

class _Draws:
    """Cheap scalar picks from a pre-drawn row of uniforms (far faster than one rng call per pick)."""

    __slots__ = ("row", "i")

    def __init__(self, row: np.ndarray):
        self.row = row.tolist()
        self.i = 0

    def u(self) -> float:
        v = self.row[self.i % len(self.row)]
        self.i += 1
        return v

    def pick(self, seq):
        return seq[int(self.u() * len(seq))]

    def sample(self, seq, k: int) -> list:
        pool = list(seq)
        out = []
        for _ in range(min(k, len(pool))):
            out.append(pool.pop(int(self.u() * len(pool))))
        return out


def _an(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _upper1(text: str) -> str:
    return text[:1].upper() + text[1:]


def _cap(words: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in words.split(" "))


def _iso(seconds: np.ndarray) -> np.ndarray:
    stamps = (START + np.asarray(seconds, dtype=np.int64).astype("timedelta64[s]")).astype(str)
    return np.char.add(stamps, "Z")


def _iso1(seconds: int) -> str:
    return str(START + np.timedelta64(int(seconds), "s")) + "Z"


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sample_rows(logits: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index sampled from softmax(logits) per row (-inf allowed), one uniform per row."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    idx = (cum < (u * cum[:, -1])[:, None]).sum(axis=1)
    return np.minimum(idx, logits.shape[1] - 1)


# --------------------------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------------------------

def _item_text(cat: Category, style: Style, brand: str, noun_i: int, zh: bool, d: _Draws) -> tuple[str, str]:
    noun_en, noun_zh = cat.nouns[noun_i]
    mat_en, mat_zh = d.pick(cat.materials)
    use_en, use_zh = d.pick(cat.uses)
    langs = 1 if zh else 0
    adjs = style.zh if zh else style.en
    n_adj = 1 if d.u() < 0.55 else 2
    title_adjs = d.sample(adjs, n_adj)
    adj2 = d.pick(adjs)
    with_material = d.u() < 0.35
    r = d.u()
    initials = "".join(c for c in brand if c.isupper())[:2] or brand[:2].upper()
    if r < 0.35:
        suffix = f"{initials}-{100 + int(d.u() * 900)}"
    elif r < 0.45:
        suffix = f"Gen {2 + int(d.u() * 3)}" if not zh else f"第{'二三四'[int(d.u() * 3)]}代"
    elif r < 0.55:
        n = 2 + int(d.u() * 4)
        suffix = f"({n}-Pack)" if not zh else f"{n}件装"
    elif r < 0.60:
        suffix = "2024 Edition" if not zh else "2024款"
    else:
        suffix = ""
    marketing = ""
    if d.u() < 0.12:
        marketing = d.pick(("New", "Upgraded", "Bestselling")) if not zh else d.pick(("新款", "升级款", "爆款"))

    if langs == 0:
        parts = [brand]
        if marketing:
            parts.append(marketing)
        parts += [_cap(a) for a in title_adjs]
        if with_material:
            parts.append(_cap(mat_en))
        parts.append(_cap(noun_en))
        if suffix:
            parts.append(suffix)
        title = " ".join(parts)
        a = title_adjs[0]
        plural = noun_en.endswith("s") and not noun_en.endswith("ss")
        this, is_, pairs, art = ("These", "are", "pair", "") if plural else ("This", "is", "pairs", _an(a) + " ")
        s1 = d.pick((
            f"{this} {a} {noun_en} {is_} made from {mat_en} and built for {use_en}.",
            f"Designed for {use_en}, the {brand} {noun_en} {pairs} {mat_en} with {_an(a)} {a} build.",
            _upper1(f"{art}{a} {noun_en} in {mat_en}, ideal for {use_en}."),
            f"Made of {mat_en}, {this.lower()} {noun_en} {is_} {_an(a)} {a} pick for {use_en}.",
        ))
        s2 = d.pick((
            f"Its {adj2} design suits anyone who values {style.value_en}.",
            f"A good choice if you care about {style.value_en}.",
            f"{brand} focuses on {style.value_en}, and it shows.",
            f"Part of the {adj2} range from {brand}.",
        ))
        sentences = [s1, s2]
        if d.u() < 0.7:
            sentences.append(d.pick(FILLER_EN))
        if d.u() < 0.3:
            sentences[1], sentences[-1] = sentences[-1], sentences[1]
        return title, " ".join(sentences)

    title = brand + " " + marketing + "".join(title_adjs) + (mat_zh if with_material else "") + noun_zh
    if suffix:
        title += " " + suffix
    a = title_adjs[0]
    s1 = d.pick((
        f"这款{a}{noun_zh}采用{mat_zh}，适合{use_zh}。",
        f"{brand}{a}{noun_zh}，{mat_zh}材质，专为{use_zh}设计。",
        f"{mat_zh}打造的{a}{noun_zh}，{use_zh}的好帮手。",
    ))
    s2 = d.pick((
        f"{adj2}设计，适合注重{style.value_zh}的你。",
        f"如果你看重{style.value_zh}，它是不错的选择。",
        f"{brand}一直专注于{style.value_zh}。",
    ))
    sentences = [s1, s2]
    if d.u() < 0.7:
        sentences.append(d.pick(FILLER_ZH))
    return title, "".join(sentences)


def _make_items(rng: np.random.Generator, n: int, horizon: int, valid_s: int, chinese_share: float) -> dict:
    n_cat = len(CATEGORIES)
    cat_w = rng.dirichlet(np.full(n_cat, 8.0))
    cat = rng.choice(n_cat, size=n, p=cat_w)
    cat[rng.permutation(n)[: min(n, n_cat)]] = np.arange(min(n, n_cat))   # every category present
    style = np.zeros(n, dtype=np.int64)
    brand = np.zeros(n, dtype=np.int64)
    noun = np.zeros(n, dtype=np.int64)
    logpop = np.zeros(n)
    price = np.zeros(n)
    for c, spec in enumerate(CATEGORIES):
        members = np.flatnonzero(cat == c)
        m = len(members)
        n_sty = len(spec.styles)
        style[members] = rng.choice(n_sty, size=m, p=rng.dirichlet(np.full(n_sty, 4.0)))
        lean = np.array([[3.0 if s in leans else 0.4 for (_, leans) in spec.brands] for s in range(n_sty)])
        lean /= lean.sum(axis=1, keepdims=True)
        cum = np.cumsum(lean[style[members]], axis=1)
        brand[members] = np.minimum((rng.random(m)[:, None] > cum).sum(axis=1), len(spec.brands) - 1)
        noun[members] = rng.integers(0, len(spec.nouns), size=m)
        noun_mult = rng.lognormal(0.0, 0.35, size=len(spec.nouns))
        style_mult = np.array([s.price for s in spec.styles])
        raw = spec.price * style_mult[style[members]] * noun_mult[noun[members]] * rng.lognormal(0.0, 0.3, size=m)
        price[members] = np.maximum(np.round(raw), 1.0) - 0.01
        logpop[members] = -POP_ZIPF * np.log1p(rng.permutation(m))

    zh = np.zeros(n, dtype=bool)
    zh[rng.choice(n, size=int(round(chinese_share * n)), replace=False)] = True

    # Release times: most at the start, some spread over the training period, ~10% after valid_start (cold).
    release = np.zeros(n, dtype=np.int64)
    order = rng.permutation(n)
    n_cold = int(round(COLD_ITEM_SHARE * n))
    n_spread = int(round(SPREAD_ITEM_SHARE * n))
    cold_idx, spread_idx = order[:n_cold], order[n_cold:n_cold + n_spread]
    last = max(valid_s + 1, horizon - 3 * DAY)
    release[cold_idx] = rng.integers(valid_s, last, size=len(cold_idx))
    release[spread_idx] = rng.integers(DAY, valid_s, size=len(spread_idx))
    for c in range(n_cat):   # every category needs something on sale at the very start
        members = np.flatnonzero(cat == c)
        if len(members) and not (release[members] == 0).any():
            release[members[np.argmax(logpop[members])]] = 0

    draws = rng.random((n, 24))
    titles, descs, brands = [], [], []
    for i in range(n):
        spec = CATEGORIES[cat[i]]
        b = spec.brands[brand[i]][0]
        t, dsc = _item_text(spec, spec.styles[style[i]], b, int(noun[i]), bool(zh[i]), _Draws(draws[i]))
        titles.append(t)
        descs.append(dsc)
        brands.append(b)
    return dict(cat=cat, style=style, brand=brand, noun=noun, logpop=logpop, price=price, zh=zh,
                release=release, title=titles, description=descs, brand_name=brands)


# --------------------------------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------------------------------

SLOTS = 4   # at most 3 sign-up interests + 1 that appears through drift


def _make_users(rng: np.random.Generator, n: int, cat_sizes: np.ndarray, horizon: int, valid_s: int,
                chinese_share: float) -> dict:
    n_cat = len(CATEGORIES)
    # Popular categories attract more users, but not proportionally.
    # Empty categories (only in tiny worlds) are never chosen.
    cat_p = np.sqrt(cat_sizes.astype(float))
    cat_p = cat_p / cat_p.sum()
    log_p = np.where(cat_p > 0, np.log(np.where(cat_p > 0, cat_p, 1.0)), -np.inf)
    keys = log_p[None, :] - np.log(-np.log(rng.random((n, n_cat))))  # Gumbel top-k = weighted, no replacement
    ranked = np.argsort(-keys, axis=1, kind="stable")[:, :SLOTS]
    n_avail = int((cat_sizes > 0).sum())
    k = np.minimum(rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25]), n_avail)

    cats = np.full((n, SLOTS), -1, dtype=np.int64)
    w0 = np.zeros((n, SLOTS))
    w1 = np.zeros((n, SLOTS))
    main_style = np.full((n, SLOTS), -1, dtype=np.int64)
    second_style = np.full((n, SLOTS), -1, dtype=np.int64)
    pref_logp = np.zeros((n, SLOTS))
    alpha = np.array([4.0, 2.0, 1.0])
    gam = rng.gamma(np.broadcast_to(alpha, (n, 3)))
    drift_u = rng.random((n, 4))
    style_u = rng.random((n, SLOTS, 3))
    price_z = rng.normal(0.0, 0.3, size=(n, SLOTS))
    for u in range(n):
        ku = int(k[u])
        g = gam[u, :ku]
        w0[u, :ku] = g / g.sum()
        w1[u, :ku] = w0[u, :ku]
        used = ku
        if ku >= 2:                           # a secondary interest grows over the window
            r = 1 + int(drift_u[u, 0] * (ku - 1))
            w1[u, r] += 0.15 + 0.35 * drift_u[u, 1]
        if ku < n_avail and drift_u[u, 2] < (0.4 if ku == 1 else 0.15):   # a brand-new interest appears late
            w1[u, ku] = 0.2 + 0.25 * drift_u[u, 3]
            used = ku + 1
        w1[u] /= w1[u].sum()
        cats[u, :used] = ranked[u, :used]
        for j in range(used):
            spec = CATEGORIES[cats[u, j]]
            n_sty = len(spec.styles)
            ms = int(style_u[u, j, 0] * n_sty)
            main_style[u, j] = ms
            if style_u[u, j, 1] < 0.4:
                second_style[u, j] = (ms + 1 + int(style_u[u, j, 2] * (n_sty - 1))) % n_sty
            pref_logp[u, j] = math.log(spec.price * spec.styles[ms].price) + price_z[u, j]

    sens = rng.uniform(0.3, 1.6, size=n)
    zh = np.zeros(n, dtype=bool)
    zh[rng.choice(n, size=int(round(chinese_share * n)), replace=False)] = True
    new = np.zeros(n, dtype=bool)
    new[rng.choice(n, size=int(round(NEW_USER_SHARE * n)), replace=False)] = True
    empty = np.zeros(n, dtype=bool)
    empty[rng.choice(n, size=int(round(EMPTY_PROFILE_SHARE * n)), replace=False)] = True

    activity = np.clip(np.round(rng.lognormal(math.log(12.0), 0.75, size=n)), 5, 60).astype(np.int64)
    a_start = rng.integers(0, int(0.75 * horizon), size=n)
    stays = rng.random(n) < 0.6
    span = (horizon - a_start) * rng.uniform(0.15, 1.0, size=n)
    a_end = np.where(stays, horizon, a_start + np.maximum(span, 2 * DAY)).astype(np.int64)
    new_start = rng.integers(valid_s, max(valid_s + 1, horizon - 2 * DAY), size=n)
    a_start = np.where(new, new_start, a_start)
    a_end = np.where(new, horizon, np.minimum(a_end, horizon))

    # Age band and region: weak correlation with the dominant category.
    age = np.zeros(n, dtype=np.int64)
    region = np.zeros(n, dtype=np.int64)
    demo_u = rng.random((n, 2))
    for c, spec in enumerate(CATEGORIES):
        members = np.flatnonzero(cats[:, 0] == c)
        lean = np.zeros(len(AGE_BANDS))
        lean[list(spec.ages)] = 1.0 / len(spec.ages)
        p_age = np.cumsum(0.55 * AGE_BASE + 0.45 * lean)
        age[members] = np.minimum((demo_u[members, 0:1] > p_age[None, :]).sum(axis=1), len(AGE_BANDS) - 1)
        p_reg = np.full(len(REGIONS), 0.7 / len(REGIONS))
        p_reg[spec.region] += 0.3
        region[members] = np.minimum((demo_u[members, 1:2] > np.cumsum(p_reg)[None, :]).sum(axis=1),
                                     len(REGIONS) - 1)

    text_draws = rng.random((n, 64))
    profiles, queries = [], []
    for u in range(n):
        d = _Draws(text_draws[u])
        profiles.append("" if empty[u] else _profile(u, cats, w0, main_style, sens, bool(zh[u]), d))
        queries.append(_queries(u, cats, w1, main_style, second_style, sens, bool(zh[u]), d))
    return dict(cats=cats, w0=w0, w1=w1, main_style=main_style, second_style=second_style, pref_logp=pref_logp,
                sens=sens, zh=zh, new=new, activity=activity, a_start=a_start, a_end=a_end, age=age,
                region=region, profile=profiles, queries=queries)


def _profile(u, cats, w0, main_style, sens, zh: bool, d: _Draws) -> str:
    slots = [j for j in range(SLOTS) if cats[u, j] >= 0 and w0[u, j] >= 0.2]
    lang = 1 if zh else 0
    out = []
    for n_j, j in enumerate(slots):
        spec = CATEGORIES[cats[u, j]]
        style = spec.styles[main_style[u, j]]
        adj = d.pick(style.zh if zh else style.en)
        interest = d.pick(spec.interests[lang])
        if n_j == 0:
            persona = d.pick(spec.personas[lang])
            if zh:
                out.append(d.pick((f"{persona}，喜欢{adj}的{interest}。", f"{persona}，一直在找{adj}{interest}。",
                                   f"我是{persona}，平时主要买{adj}{interest}。")))
            else:
                out.append(d.pick((f"{persona} who loves {adj} {interest}.",
                                   f"{persona}. Always on the lookout for {adj} {interest}.",
                                   f"{persona}; mostly buys {adj} {interest}.",
                                   f"{persona} with a soft spot for {adj} {interest} and {style.value_en}.")))
        else:
            if zh:
                out.append(d.pick((f"最近也在看{adj}{interest}。", f"也喜欢{adj}风格的{interest}。")))
            else:
                out.append(d.pick((f"Also shopping for {adj} {interest}.", f"Into {adj} {interest} too.")))
    if sens[u] > 1.3:
        out.append("比较在意性价比。" if zh else d.pick(("Always hunting for a good deal.", "Budget-conscious.")))
    elif sens[u] < 0.5:
        out.append("愿意为品质多花钱。" if zh else "Happy to pay more for quality.")
    if d.u() < 0.3:
        out.append(d.pick(PROFILE_FILLER_ZH if zh else PROFILE_FILLER_EN))
    return ("" if zh else " ").join(out)


def _queries(u, cats, w1, main_style, second_style, sens, zh: bool, d: _Draws) -> str:
    n_q = 2 + int(d.u() * 4)
    slots = [j for j in range(SLOTS) if cats[u, j] >= 0]
    weights = np.cumsum([w1[u, j] for j in slots])
    out = []
    for _ in range(n_q):
        j = slots[min(int(np.searchsorted(weights, d.u() * weights[-1], side="right")), len(slots) - 1)]
        spec = CATEGORIES[cats[u, j]]
        s = main_style[u, j]
        if second_style[u, j] >= 0 and d.u() < 0.3:
            s = second_style[u, j]
        style = spec.styles[s]
        q_zh = zh and d.u() < 0.85
        noun_en, noun_zh = d.pick(spec.nouns)
        mat_en, mat_zh = d.pick(spec.materials)
        use_en, use_zh = d.pick(spec.uses)
        brand = d.pick([b for b, leans in spec.brands if s in leans] or [b for b, _ in spec.brands])
        if q_zh:
            adj = d.pick(style.zh)
            opts = [f"{adj}{noun_zh}", f"{brand}{noun_zh}", f"{noun_zh}推荐", f"{use_zh}{noun_zh}",
                    f"{mat_zh}{noun_zh}", f"{adj}{noun_zh}推荐"]
            if sens[u] > 1.2:
                opts.append(f"平价{noun_zh}")
        else:
            adj = d.pick(style.en)
            opts = [f"{adj} {noun_en}", f"{noun_en} {adj}", f"best {adj} {noun_en}", f"{brand} {noun_en}",
                    f"{noun_en} for {use_en}", f"{mat_en} {noun_en}"]
            if sens[u] > 1.2:
                opts.append(f"cheap {noun_en}")
        out.append(d.pick(opts).lower() if not q_zh else d.pick(opts))
    return " | ".join(out)


# --------------------------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------------------------

def _simulate(rng: np.random.Generator, it: dict, us: dict, horizon: int, progress: bool) -> dict:
    n_cat = len(CATEGORIES)
    by_cat = []
    for c in range(n_cat):
        idx = np.flatnonzero(it["cat"] == c)
        by_cat.append(dict(idx=idx, rel=it["release"][idx], logpop=POP_EXP * it["logpop"][idx],
                           style=it["style"][idx], logp=np.log(it["price"][idx]), zh=it["zh"][idx],
                           new=(it["release"][idx] > 0).astype(float)))
    item_cat, item_style = it["cat"], it["style"]
    out_u, out_i, out_t, out_e = [], [], [], []
    n_users = len(us["activity"])
    ms_by_cat = np.full(n_cat, -1, dtype=np.int64)
    for u in tqdm(range(n_users), disable=not progress, desc="simulating users", unit="user"):
        n = int(us["activity"][u])
        a0, a1 = int(us["a_start"][u]), int(us["a_end"][u])
        # Sessions: the first one opens the user's active period, the rest fall uniformly inside it.
        n_s = 1 + int(rng.binomial(n - 1, 0.35))
        starts = np.empty(n_s, dtype=np.int64)
        starts[0] = a0
        starts[1:] = rng.integers(a0, max(a0 + 1, a1), size=n_s - 1)
        assign = rng.integers(0, n_s, size=n)
        assign[0] = 0
        offset = rng.exponential(900.0, size=n).astype(np.int64)
        offset[0] = 0
        t = np.sort(np.minimum(starts[assign] + offset, horizon - 1))

        # Which interest each view serves, from the drifting taste.
        slots = np.flatnonzero(us["cats"][u] >= 0)
        frac = (t / horizon)[:, None]
        w = us["w0"][u, slots][None, :] * (1 - frac) + us["w1"][u, slots][None, :] * frac
        cum = np.cumsum(w, axis=1)
        slot = np.minimum((rng.random(n)[:, None] * cum[:, -1:] >= cum).sum(axis=1), len(slots) - 1)
        rep = rng.random(n) < REPEAT_P
        rep[0] = False
        pick_u = rng.random(n)
        back = rng.geometric(0.45, size=n)
        items = np.empty(n, dtype=np.int64)
        user_zh = bool(us["zh"][u])
        ms_by_cat[:] = -1
        for j_pos, j in enumerate(slots):
            c = int(us["cats"][u, j])
            ms_by_cat[c] = us["main_style"][u, j]
            ev = np.flatnonzero((slot == j_pos) & ~rep)
            if not len(ev):
                continue
            P = by_cat[c]
            aff = np.where(P["style"] == us["main_style"][u, j], STYLE_MAIN, 0.0)
            if us["second_style"][u, j] >= 0:
                aff = aff + np.where(P["style"] == us["second_style"][u, j], STYLE_SECOND, 0.0)
            static = (P["logpop"] + aff - us["sens"][u] * (P["logp"] - us["pref_logp"][u, j]) ** 2
                      + np.where(P["zh"] == user_zh, LANG_BONUS, 0.0))
            age = t[ev][:, None] - P["rel"][None, :]
            logits = static[None, :] + RECENCY_BONUS * P["new"][None, :] * np.exp(-np.maximum(age, 0) / RECENCY_TAU)
            logits = np.where(age >= 0, logits, -np.inf)
            items[ev] = P["idx"][_sample_rows(logits, pick_u[ev])]
        for j in np.flatnonzero(rep):        # re-view an earlier item (its release is already in the past)
            items[j] = items[j - min(int(back[j]), j)]

        match = ms_by_cat[item_cat[items]] == item_style[items]
        q = 0.09 + 0.12 * match + 0.25 * rep
        buy = rng.random(n) < q
        bt = np.minimum(t[buy] + 60 + rng.exponential(1500.0, size=int(buy.sum())).astype(np.int64), horizon - 1)

        m = n + len(bt)
        out_u.append(np.full(m, u, dtype=np.int64))
        out_i.append(np.concatenate([items, items[buy]]))
        out_t.append(np.concatenate([t, bt]))
        out_e.append(np.concatenate([np.zeros(n, dtype=np.int8), np.ones(len(bt), dtype=np.int8)]))
    user = np.concatenate(out_u)
    item = np.concatenate(out_i)
    ts = np.concatenate(out_t)
    ev = np.concatenate(out_e)
    order = np.lexsort((ev, ts, user))
    return dict(user=user[order], item=item[order], t=ts[order], event=ev[order])


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------

def generate_world(out_dir: str | os.PathLike, users: int = 2000, items: int = 1500, seed: int = 0,
                   days: int = 180, chinese_share: float = 0.15, progress: bool = True) -> dict:
    """Generate the world into ``out_dir`` (created) and return the contents of its ``world.json``.

    Same arguments → byte-identical files. Files are written under a temporary name and renamed into place.
    """
    if users < 1 or items < 1:
        raise ValueError(f"users and items must be positive, got users={users}, items={items}")
    if days < 10:
        raise ValueError(f"days must be at least 10, got {days}")
    if not 0.0 <= chinese_share <= 1.0:
        raise ValueError(f"chinese_share must be within [0, 1], got {chinese_share}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    horizon = int(days) * DAY
    valid_s = int(round(0.8 * days)) * DAY
    test_s = int(round(0.9 * days)) * DAY

    it = _make_items(rng, items, horizon, valid_s, chinese_share)
    cat_sizes = np.bincount(it["cat"], minlength=len(CATEGORIES))
    us = _make_users(rng, users, cat_sizes, horizon, valid_s, chinese_share)
    sim = _simulate(rng, it, us, horizon, progress)

    iw = max(5, len(str(items - 1)))
    uw = max(5, len(str(users - 1)))
    item_ids = np.array([f"I{i:0{iw}d}" for i in range(items)], dtype=object)
    user_ids = np.array([f"U{i:0{uw}d}" for i in range(users)], dtype=object)

    items_df = pd.DataFrame({
        "item_id": item_ids,
        "title": it["title"],
        "description": it["description"],
        "category": [CATEGORIES[c].name for c in it["cat"]],
        "brand": it["brand_name"],
        "price": [f"{p:.2f}" for p in it["price"]],
        "release_time": _iso(it["release"]),
    })
    users_df = pd.DataFrame({
        "user_id": user_ids,
        "profile_text": us["profile"],
        "search_queries": us["queries"],
        "age_band": [AGE_BANDS[a] for a in us["age"]],
        "region": [REGIONS[r] for r in us["region"]],
    })
    inter_df = pd.DataFrame({
        "user_id": user_ids[sim["user"]],
        "item_id": item_ids[sim["item"]],
        "timestamp": _iso(sim["t"]),
        "event": np.where(sim["event"] == 1, "purchase", "view"),
        "weight": np.where(sim["event"] == 1, "3.0", "1.0"),
    })

    first = np.full(users, np.iinfo(np.int64).max)
    np.minimum.at(first, sim["user"], sim["t"])
    cold = np.flatnonzero(it["release"] >= valid_s)
    touched = np.zeros(items, dtype=bool)
    touched[sim["item"]] = True
    n_purchase = int(sim["event"].sum())
    world = {
        "seed": int(seed),
        "users": int(users),
        "items": int(items),
        "days": int(days),
        "chinese_share": float(chinese_share),
        "start": _iso1(0),
        "valid_start": _iso1(valid_s),
        "test_start": _iso1(test_s),
        "end": _iso1(horizon),
        "categories": [c.name for c in CATEGORIES],
        "cold_items": [str(x) for x in item_ids[cold]],
        "new_users": [str(x) for x in user_ids[np.flatnonzero(first >= valid_s)]],
        "counts": {
            "items": int(items),
            "users": int(users),
            "interactions": int(len(sim["t"])),
            "views": int(len(sim["t"]) - n_purchase),
            "purchases": n_purchase,
            "cold_items": int(len(cold)),
            "cold_items_with_interactions": int(touched[cold].sum()),
            "new_users": int((first >= valid_s).sum()),
            "chinese_items": int(it["zh"].sum()),
            "chinese_users": int(us["zh"].sum()),
            "empty_profiles": int(sum(1 for p in us["profile"] if not p)),
        },
    }

    def csv_writer(df):
        return lambda p: df.to_csv(p, index=False, lineterminator="\n", encoding="utf-8")

    _write_atomic(out / "items.csv", csv_writer(items_df))
    _write_atomic(out / "users.csv", csv_writer(users_df))
    _write_atomic(out / "interactions.csv", csv_writer(inter_df))
    _write_atomic(out / "world.json",
                  lambda p: p.write_text(json.dumps(world, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"))
    return world


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--chinese-share", type=float, default=0.15)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    world = generate_world(a.out_dir, users=a.users, items=a.items, seed=a.seed, days=a.days,
                           chinese_share=a.chinese_share, progress=not a.quiet)
    print(json.dumps(world["counts"], indent=2))


if __name__ == "__main__":
    main()
