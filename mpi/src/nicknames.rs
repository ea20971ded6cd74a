//! Common English given-name nicknames and variants, each to one canonical name. A name in no
//! group is its own canonical form.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Each line: the canonical name, then its nicknames and spelling variants (already folded to
/// lower-case ASCII, as `normalize::name` leaves them).
const GROUPS: &str = "
abigail abby abbie gail
abraham abe bram
albert al bert bertie
alexander alex al alec sasha xander sandy
alexandra alex alexa sandra sandy lexi
alfred alf fred freddie
allison alison ali allie ally
andrew andy drew
angela angie
anthony tony
antonio tony toni
arthur art artie
barbara barb barbie babs
benjamin ben benny benji
bernard bernie
beverly bev
bradley brad
bridget bridgette biddy
caroline carol carrie carolyn
catherine katherine kathryn katharine cathy kathy kate katie kat cat cate kitty
charles charlie chuck chas chaz
christina christine chris tina chrissy kristina kristine
christopher chris kit topher
cynthia cindy
daniel dan danny
david dave davey
deborah debra debbie deb
dennis denny
donald don donnie
dorothy dot dottie dolly
douglas doug
edward ed eddie ted teddy ned
eleanor ellie nell nora elle
elizabeth beth betty liz lizzie eliza betsy elisabeth libby lisa bess
emily em emmy
eugene gene
frances fran frannie
francis frank frankie
frederick fred freddie fritz
gabriel gabe
gerald gerry jerry
gregory greg
harold hal harry
helen nell nellie
henry hank harry hal
isabella isabel bella izzy
jacob jake
james jim jimmy jamie
janet jan
jeffrey jeff geoffrey
jennifer jen jenny jenn
jessica jess jessie
john jack johnny jon
jonathan jon jonny nathan
joseph joe joey jose
joshua josh
judith judy jude
katelyn kaitlyn caitlin katie
kenneth ken kenny
lawrence larry laurence
leonard leo len lenny
louis lou louie luis
margaret peggy maggie meg margie marge greta madge peg
matthew matt matty
michael mike mikey mick mickey
mitchell mitch
nathaniel nate nat nathan
nicholas nick nicky
olivia liv livvy
pamela pam
patricia pat patty patsy trish tricia
patrick pat paddy rick
peter pete
philip phil phillip
rebecca becky becca
richard rick ricky dick rich richie
robert bob bobby rob robbie bert
ronald ron ronnie
samuel sam sammy
sandra sandy
stephanie steph stephy
stephen steve steven stevie
susan sue susie suzanne suzy
theodore ted teddy theo
thomas tom tommy
timothy tim timmy
valerie val
victoria vicky tori vicki
vincent vince vinny
virginia ginny ginger
walter walt wally
william bill billy will willy liam
zachary zach zack
kimberly kim kimmy
theresa teresa terry tess tessa
melissa missy mel lissa
jacqueline jackie jacky
madison maddie maddy
amanda mandy manda
natalie nat talia
josephine josie jo
sophia sophie
dolores lola lolita
guadalupe lupe lupita
jose pepe
francisco paco pancho frank
jesus chuy
eduardo lalo eddie
manuel manny
kathleen kathy kate katie
mary molly polly mae mamie
sarah sally sadie sara
ann anne annie nancy nan
alfonso poncho
enrique kike
ignacio nacho
roberto beto
alberto beto
guillermo memo
raymond ray
samantha sam sammy
allison ally allie
";

struct Table {
    /// Each group's canonical name, by group number.
    canonical: Vec<&'static str>,
    /// The groups each name is in (a nickname of several names, like `al` or `pat`, is in
    /// several).
    groups: HashMap<&'static str, Vec<u16>>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table {
            canonical: Vec::new(),
            groups: HashMap::new(),
        };
        for line in GROUPS.lines() {
            let words: Vec<&'static str> = line.split_whitespace().collect();
            let Some(first) = words.first() else {
                continue;
            };
            let group = t.canonical.len() as u16;
            t.canonical.push(first);
            for w in words {
                let gs = t.groups.entry(w).or_default();
                if !gs.contains(&group) {
                    gs.push(group);
                }
            }
        }
        t
    })
}

/// The canonical form of a folded given name: the full name of its first group (a nickname of
/// several names keeps the first), else itself.
pub fn canonical(given: &str) -> &str {
    let t = table();
    match t.groups.get(given) {
        Some(gs) => t.canonical[gs[0] as usize],
        None => given,
    }
}

/// Whether one name is a nickname or variant of the other (both folded), in any direction:
/// `jon` and `jonathan`, `peggy` and `margaret`, and also `jon` and `john` (a group of each).
pub fn related(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let t = table();
    match (t.groups.get(a), t.groups.get(b)) {
        (Some(ga), Some(gb)) => ga.iter().any(|g| gb.contains(g)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_meet_their_names() {
        assert!(related("jon", "jonathan"));
        assert!(related("bill", "william"));
        assert!(related("peggy", "margaret"));
        assert!(related("jon", "john"));
        assert!(related("liz", "beth"));
        assert!(!related("john", "james"));
        assert!(!related("mary", "maria"));
        assert_eq!(canonical("bill"), "william");
        assert_eq!(canonical("zebulon"), "zebulon");
    }
}
